"""TorchX launching layer: components and ``.torchxconfig`` defaults, checked through ``torchx run --dryrun``.

The dry runs build the exact scheduler requests (local_cwd Popen args, Slurm sbatch script, Volcano job) without
launching anything. One fast test launches real 2-rank jobs on local_cwd with a tiny script; the ``slow`` test
trains for real through the ``train`` component.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from torchx.runner import Runner, get_runner
from torchx.runner.config import load_sections
from torchx.specs import AppDef, AppDryRunInfo, VolumeMount

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TORCHX = str(BIN / "torchx")
COMPONENTS = str(REPO / "torchx_components" / "components.py")


def torchx_env() -> dict[str, str]:
    """Environment for the torchx CLI: this venv's torchrun/python first on PATH, only the repo's .torchxconfig."""
    env = {k: v for k, v in os.environ.items() if k != "TORCHXCONFIG"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # keep a user-level ~/.torchxconfig out of the way; outside the repo, as matplotlib writes its cache under HOME
    env["HOME"] = str(Path(tempfile.gettempdir()) / "dlf_torchrec_tests_no_home")
    return env


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the torchx CLI from the repository root (so that .torchxconfig applies)."""
    return subprocess.run([TORCHX, *args], cwd=REPO, env=torchx_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def runner() -> Iterator[Runner]:
    with get_runner(component_defaults=load_sections("component", dirs=[str(REPO)])) as r:
        yield r


def dryrun(runner: Runner, component: str, args: list[str], scheduler: str,
           cfg: dict[str, str] | None = None) -> AppDryRunInfo:
    return runner.dryrun_component(component, args, scheduler, cfg=dict(cfg or {}), workspace=None)


def torchrun_cmd(app: AppDef) -> list[str]:
    """The torchrun command line of the (single) role, as bash will split it."""
    (role,) = app.roles
    assert role.entrypoint == "bash" and role.args[0] == "-c"
    return shlex.split(role.args[1])


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


# ---------------------------------------------------------------------------------------------- train component
def test_train_local_cwd_single_node(runner: Runner) -> None:
    info = dryrun(runner, f"{COMPONENTS}:train", ["-j", "1x2", "--config", "configs/synthetic/dlf.yaml",
                                                  "training.epochs=1", "model.dropout=0.1"], "local_cwd")
    app = info._app
    (role,) = app.roles
    cmd = torchrun_cmd(app)
    assert cmd[0] == "torchrun"
    assert flag(cmd, "--nnodes") == "1" and flag(cmd, "--nproc_per_node") == "2"
    assert flag(cmd, "--rdzv_backend") == "c10d" and flag(cmd, "--rdzv_endpoint") == "localhost:0"
    assert cmd[cmd.index("-m"):] == ["-m", "dlf_torchrec.train", "--config", "configs/synthetic/dlf.yaml",
                                     "training.epochs=1", "model.dropout=0.1"]
    assert role.num_replicas == 1 and role.max_retries == 0
    # CPU job: no NCCL defaults (gloo is picked by dlf_torchrec itself)
    assert not any(k.startswith(("NCCL_", "TORCH_NCCL_")) for k in role.env)
    (replica,) = info.request.role_params["train"]
    assert replica.cwd == str(REPO) and replica.args[:2] == ["bash", "-c"]


def test_train_script_form_and_default_config(runner: Runner) -> None:
    app = dryrun(runner, f"{COMPONENTS}:train", ["--script", "dlf_torchrec/train.py"], "local_cwd")._app
    cmd = torchrun_cmd(app)
    assert "-m" not in cmd
    assert cmd[-3:] == ["dlf_torchrec/train.py", "--config", "configs/synthetic/dcnv2.yaml"]
    assert flag(cmd, "--nproc_per_node") == "2"  # component default j=1x2


def test_train_slurm_multi_node_gpu(runner: Runner) -> None:
    info = dryrun(runner, f"{COMPONENTS}:train",
                  ["-j", "4x8", "--gpu", "8", "--cpu", "64", "--memMB", "400000", "--max_retries", "2",
                   "--rdzv_port", "29600", "--env", "NCCL_SOCKET_IFNAME=ib0,NCCL_DEBUG=INFO",
                   "--config", "configs/criteo/dcnv2.yaml", "training.output_dir=/shared/runs/x"],
                  "slurm", {"partition": "gpu", "time": "04:00:00"})
    (role,) = info._app.roles
    assert role.num_replicas == 4 and role.max_retries == 2
    assert (role.resource.cpu, role.resource.gpu, role.resource.memMB) == (64, 8, 400000)
    assert role.env["NCCL_SOCKET_IFNAME"] == "ib0"
    assert role.env["NCCL_DEBUG"] == "INFO"  # the user's value wins over the default WARN
    assert role.env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    script = info.request.materialize()
    assert script.count("#SBATCH --job-name=train-") == 4 and script.count("#SBATCH hetjob") == 3
    assert "--partition=gpu" in script and "--time=04:00:00" in script
    assert "--gpus-per-task=8" in script and "--cpus-per-task=64" in script and "--mem=400000" in script
    assert "export TORCHX_MAX_RETRIES=2" in script
    # rendezvous: c10d store on the first node of the allocation (het group 0), on rdzv_port
    assert "--rdzv_endpoint ${SLURM_JOB_NODELIST_HET_GROUP_0:=localhost}:29600" in script
    assert "--nnodes 4 --nproc_per_node 8" in script
    assert "-m dlf_torchrec.train --config configs/criteo/dcnv2.yaml training.output_dir=/shared/runs/x" in script
    assert "NCCL_SOCKET_IFNAME=ib0" in script and "TORCH_NCCL_ASYNC_ERROR_HANDLING=1" in script
    # restarts after one node's failure need a fresh rendezvous store per round (pytorch#135712)
    assert role.env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1" and "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in script


def test_train_single_node_keeps_torchruns_shared_store(runner: Runner) -> None:
    for j in ("1x2", "1x8"):
        (role,) = dryrun(runner, f"{COMPONENTS}:train", ["-j", j], "local_cwd")._app.roles
        assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE" not in role.env, j
    (role,) = dryrun(runner, f"{COMPONENTS}:train", ["-j", "1:3x2", "--env", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=0"],
                     "slurm")._app.roles
    assert role.env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "0"  # elastic, but the user's value wins


def test_train_named_gpu_resource_gets_nccl_env(runner: Runner) -> None:
    app = dryrun(runner, f"{COMPONENTS}:train", ["-j", "2x8", "-h", "aws_p4d.24xlarge"], "slurm")._app
    (role,) = app.roles
    assert role.resource.gpu == 8
    assert role.env["NCCL_DEBUG"] == "WARN" and role.env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"


def test_train_rdzv_backend_static(runner: Runner) -> None:
    app = dryrun(runner, f"{COMPONENTS}:train", ["-j", "2x2", "--rdzv_backend", "static"], "slurm")._app
    cmd = torchrun_cmd(app)
    assert flag(cmd, "--rdzv_backend") == "static" and "--node_rank" in cmd


def test_train_kubernetes_appdef(runner: Runner) -> None:
    """The AppDef part of a Kubernetes job (mounts, image, resources); needs no kubernetes client."""
    from torchx_components.components import train

    app = train("training.epochs=1", j="2x8", gpu=8, cpu=32, memMB=200000, image="ghcr.io/acme/dlf_torchrec:0.1",
                mounts=["type=volume", "src=criteo-pvc", "dst=/data", "readonly"], max_retries=1)
    (role,) = app.roles
    assert role.image == "ghcr.io/acme/dlf_torchrec:0.1" and role.num_replicas == 2 and role.max_retries == 1
    assert role.mounts == [VolumeMount(src="criteo-pvc", dst_path="/data", read_only=True)]
    assert role.port_map == {"c10d": 29500}
    assert role.env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"


def test_train_kubernetes_volcano_job(runner: Runner) -> None:
    """The Volcano job that ``-s kubernetes`` submits (needs the ``kubernetes`` client package to render)."""
    pytest.importorskip("kubernetes", reason="torchx's kubernetes scheduler needs the kubernetes client package")
    with pytest.warns(UserWarning, match="Volcano"):  # torchx: Volcano retries are unreliable (documented)
        info = dryrun(runner, f"{COMPONENTS}:train",
                      ["-j", "2x8", "--gpu", "8", "--image", "ghcr.io/acme/dlf_torchrec:0.1",
                       "--mounts", "type=volume,src=criteo-pvc,dst=/data", "--max_retries", "3"],
                      "kubernetes", {"queue": "default", "namespace": "ml"})
    job = info.request.resource
    assert job["kind"] == "Job" and job["spec"]["schedulerName"] == "volcano"
    assert job["spec"]["queue"] == "default" and job["spec"]["maxRetry"] == 3
    tasks = job["spec"]["tasks"]
    assert len(tasks) == 2
    for task in tasks:
        pod = task["template"].spec
        (container,) = pod.containers
        assert container.image == "ghcr.io/acme/dlf_torchrec:0.1"
        assert container.resources.limits["nvidia.com/gpu"] == "8"
        assert "/data" in [m.mount_path for m in container.volume_mounts]
        claims = [v.persistent_volume_claim.claim_name for v in pod.volumes if v.persistent_volume_claim]
        assert claims == ["criteo-pvc"]
        assert "--nnodes 2 --nproc_per_node 8" in container.command[2]
        assert {e.name: e.value for e in container.env}["NCCL_DEBUG"] == "WARN"
    # rank 1 rendezvous at rank 0's Volcano service host name
    assert "${VC_TRAIN_0_HOSTS:=localhost}:29500" in tasks[1]["template"].spec.containers[0].command[2]


# -------------------------------------------------------------------------------- preprocess, benchmark components
def test_preprocess_component(runner: Runner) -> None:
    info = dryrun(runner, f"{COMPONENTS}:preprocess",
                  ["--config", "configs/criteo/dcnv2.yaml", "--env", "A=1", "--mounts",
                   "type=bind,src=/shared,dst=/shared", "dataset.output_dir=/shared/criteo"], "slurm",
                  {"partition": "cpu"})
    (role,) = info._app.roles
    assert role.entrypoint == "python" and role.num_replicas == 1
    assert role.args == ["-m", "dlf_torchrec.data.preprocess", "--config", "configs/criteo/dcnv2.yaml",
                         "dataset.output_dir=/shared/criteo"]
    assert role.env["A"] == "1" and role.resource.gpu == 0
    assert [(m.src_path, m.dst_path) for m in role.mounts] == [("/shared", "/shared")]
    script = info.request.materialize()
    assert "python -m dlf_torchrec.data.preprocess --config configs/criteo/dcnv2.yaml" in script
    assert "hetjob" not in script and "--partition=cpu" in script


def test_benchmark_component(runner: Runner) -> None:
    """One plain process (the benchmark spawns its own ranks), arguments passed through after ``--``."""
    info = dryrun(runner, f"{COMPONENTS}:benchmark", ["--cpu", "16", "--", "--world-sizes", "1", "2"], "slurm")
    (role,) = info._app.roles
    assert role.entrypoint == "python" and role.num_replicas == 1 and role.resource.cpu == 16
    assert role.args == ["benchmarks/throughput.py", "--world-sizes", "1", "2"]
    assert "python benchmarks/throughput.py --world-sizes 1 2" in info.request.materialize()
    gpu = dryrun(runner, f"{COMPONENTS}:benchmark", ["--gpu", "8"], "slurm")._app
    assert gpu.roles[0].env["NCCL_DEBUG"] == "WARN"


# ------------------------------------------------------------------------------- dist.ddp with .torchxconfig, CLI
def test_cli_help_lists_parameters() -> None:
    proc = cli("run", f"{COMPONENTS}:train", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--config", "-j", "--gpu", "--memMB", "--env", "--mounts", "--max_retries", "--rdzv_backend",
                   "--rdzv_port", "--image", "--name"):
        assert option in proc.stdout


def test_dist_ddp_with_torchxconfig_defaults(runner: Runner) -> None:
    """The design card's command and its short forms, with the component defaults of the repo's .torchxconfig."""
    forms = {
        ("-j", "1x8", "--script", "dlf_torchrec/train.py"): ["dlf_torchrec/train.py"],
        ("-j", "1x8"): ["torchx_components/train.py"],
        ("-j", "1x8", "dlf_torchrec/train.py"): ["torchx_components/train.py", "dlf_torchrec/train.py"],
        ("-j", "1x8", "--", "--config", "c.yaml", "a=1"): ["torchx_components/train.py", "--config", "c.yaml", "a=1"],
    }
    for args, tail in forms.items():
        app = dryrun(runner, "dist.ddp", list(args), "local_cwd")._app
        cmd = torchrun_cmd(app)
        assert flag(cmd, "--nnodes") == "1" and flag(cmd, "--nproc_per_node") == "8", args
        assert cmd[cmd.index("--role") + 2:] == tail, (args, cmd)
        assert app.roles[0].name == "train"


def test_cli_design_card_command_dryrun() -> None:
    """The CLI from the repo root: explicit, no --script and positional forms; local_cwd is the default scheduler."""
    for args in (["-s", "local_cwd", "dist.ddp", "-j", "1x8", "--script", "dlf_torchrec/train.py"],
                 ["-s", "local_cwd", "dist.ddp", "-j", "1x8"],
                 ["-s", "local_cwd", "dist.ddp", "-j", "1x8", "dlf_torchrec/train.py"],
                 ["dist.ddp", "-j", "1x8"]):
        proc = cli("run", "--dryrun", *args)
        assert proc.returncode == 0, f"{args}: {proc.stderr[-2000:]}"
        assert "local_cwd://torchx/train-" in proc.stdout and "--nproc_per_node 8" in proc.stdout


def test_cli_kubernetes_dryrun_without_docker() -> None:
    """``--workspace ""`` skips the image patch build, so no docker engine is needed to render the job."""
    pytest.importorskip("kubernetes", reason="torchx's kubernetes scheduler needs the kubernetes client package")
    proc = cli("run", "--workspace", "", "--dryrun", "-s", "kubernetes", "-cfg", "queue=default",
               f"{COMPONENTS}:train", "-j", "2x8", "--gpu", "8", "--image", "ghcr.io/acme/dlf_torchrec:0.1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "schedulerName: volcano" in proc.stdout and "nvidia.com/gpu: '8'" in proc.stdout


def test_cli_positional_script_really_runs(tmp_path: Path) -> None:
    """``dist.ddp -j 1x2 SCRIPT ARGS`` launches 2 ranks of SCRIPT with ARGS (via torchx_components/train.py)."""
    script = tmp_path / "hello_rank.py"
    script.write_text("import os, sys\n"
                      "print(f\"hello rank={os.environ['RANK']}/{os.environ['WORLD_SIZE']} argv={sys.argv[1:]}\")\n")
    proc = cli("run", "-s", "local_cwd", "dist.ddp", "-j", "1x2", str(script), "a=1", "--b", timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    for rank in (0, 1):
        assert f"hello rank={rank}/2 argv=['a=1', '--b']" in out


def test_launcher_dispatch(tmp_path: Path) -> None:
    from torchx_components import train as launcher

    script = tmp_path / "exit3.py"
    script.write_text("import sys\nassert sys.argv[1:] == ['x=1'], sys.argv\nsys.exit(3)\n")
    assert launcher.is_script(str(script)) and not launcher.is_script("training.epochs=1")
    proc = subprocess.run([sys.executable, str(REPO / "torchx_components" / "train.py"), str(script), "x=1"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr


# ------------------------------------------------------------------------------------------------- real training
@pytest.mark.slow
def test_train_component_runs_two_ranks(tmp_path: Path) -> None:
    """A tiny synthetic run of the ``train`` component on 2 local gloo ranks, to completion."""
    proc = cli("run", "-s", "local_cwd", f"{COMPONENTS}:train", "-j", "1x2",
               "--config", "configs/synthetic/dcnv2.yaml",
               "dataset.synthetic_rows=4000", "training.epochs=1", "training.batch_size=512",
               f"dataset.output_dir={tmp_path / 'data'}", f"training.output_dir={tmp_path / 'run'}",
               "training.progress=false", "dataset.progress=false", timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "best checkpoint valid: AUC=" in out, out[-6000:]
    assert "world size 2 (gloo)" in out
    assert (tmp_path / "run" / "results.json").is_file()
