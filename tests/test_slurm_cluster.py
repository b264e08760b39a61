"""The ``-s slurm`` path for real: a two-node Slurm cluster on this machine (examples/slurm/local_cluster.sh, which
apt-installs slurm-wlm, slurmdbd, munge and mariadb-server when missing), a 2-node TorchX job (c10d rendezvous
across the nodes) whose result equals torchrun's on 2 ranks, ``torchx status``/``torchx log`` on it, and a job
preempted with ``scancel --signal=TERM`` that Slurm requeues and that resumes exactly. Needs root (CI runs as root);
skipped only when apt-get cannot install the packages. About 2-2.5 minutes on 2 cores (plus ~80 s of apt the first
time); see docs/launching.md (local Slurm cluster)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_preemption import EXTRA, _evals
from test_reliability import REPO, _args, _events

pytestmark = pytest.mark.slow
SCRIPT = REPO / "examples" / "slurm" / "local_cluster.sh"
COMPONENT = f"{REPO / 'torchx_components' / 'components.py'}:train"
APT_FAILED = 3  # local_cluster.sh's exit status when apt-get cannot install the packages


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free TCP ports (slurmctld, 2 slurmd, slurmdbd, MariaDB)."""
    for base in range(26817, 40000, 16):
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range for the local Slurm cluster")


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    """Brought up for this module (its own directory and ports, so a user's cluster is left alone), then down."""
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster needs root (daemons as root, apt-get, /etc/hosts)")
    # Not under pytest's private (0700) tmp dirs: munged wants every directory above its socket searchable by all.
    root = Path(tempfile.mkdtemp(prefix="dlf-slurm-test-"))
    root.chmod(0o755)
    env = {**os.environ, "DLF_SLURM_DIR": str(root / "cluster"), "DLF_SLURM_PORT": str(_free_port_range(5)),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}:/usr/sbin",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("TORCHXCONFIG", None)
    up = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=600)
    if up.returncode == APT_FAILED:
        pytest.skip(f"apt-get could not install slurm-wlm/munge/mariadb-server: {up.stderr.strip()[-500:]}")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        env["SLURM_CONF"] = str(root / "cluster" / "slurm.conf")
        env["SUBMIT_DIR"] = str(root / "submit")  # where sbatch runs and the jobs' slurm-*.out/err files go
        os.makedirs(env["SUBMIT_DIR"])
        yield env
    finally:
        down = subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
        assert down.returncode == 0, down.stdout + down.stderr


def _cli(env: dict[str, str], *cmd: str, timeout: float = 60) -> str:
    proc = subprocess.run(list(cmd), env=env, cwd=env["SUBMIT_DIR"], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _submit(env: dict[str, str], data: str, run: Path, *options: str) -> str:
    """``torchx run -s slurm`` of the train component on 2 nodes x 1 rank; returns the Slurm job id."""
    out = _cli(env, "torchx", "run", "-s", "slurm", COMPONENT, "-j", "2x1", "--cpu", "1", "--memMB", "1024",
               "--rdzv_port", str(_free_port()), *options, *_args(data, run, *EXTRA))
    match = re.search(r"slurm://torchx/(\d+)", out)
    assert match, out
    return match.group(1)


def _states(env: dict[str, str], job: str) -> list[str]:
    """sacct's state of each het component (one per node) of ``job``."""
    out = _cli(env, "sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job)
    return [line.split("|")[1].split()[0] for line in out.splitlines() if line.startswith(f"{job}+")]


def _wait_done(env: dict[str, str], job: str, timeout: float) -> list[str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = _states(env, job)
        if states and all(s not in {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "REQUEUE_HOLD"} for s in states):
            return states
        time.sleep(1)
    pytest.fail(f"job {job} not done after {timeout}s: {_states(env, job)}\n{_job_logs(env, job)}")


def _job_logs(env: dict[str, str], job: str) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(Path(env["SUBMIT_DIR"]).glob(f"*{job}*")))


def test_two_node_job_equals_torchrun(cluster: dict[str, str], sigterm_reference: tuple[str, Path],
                                      tmp_path: Path) -> None:
    """2 nodes x 1 rank through sbatch/srun, c10d rendezvous on the first node: torchrun's result on 2 ranks."""
    data_dir, reference = sigterm_reference
    run = tmp_path / "run"
    job = _submit(cluster, data_dir, run)
    assert _wait_done(cluster, job, 300) == ["COMPLETED", "COMPLETED"], _job_logs(cluster, job)
    nodes = _cli(cluster, "sacct", "-n", "-X", "-P", "-o", "NodeList", "-j", job).split()
    assert sorted(nodes) == ["dlf-n1", "dlf-n2"], nodes  # one rank on each node
    got, want = (json.loads((r / "results.json").read_text())["valid"] for r in (run, reference))
    assert abs(got["auc"] - want["auc"]) <= 1e-4, (got, want)
    assert got == want  # identical in practice: same ranks, same plan, same data order

    status = _cli(cluster, "torchx", "status", f"slurm://torchx/{job}")
    assert "train[0]:SUCCEEDED" in status and "train[1]:SUCCEEDED" in status, status
    log = _cli(cluster, "torchx", "log", "--streams", "stdout", f"slurm://torchx/{job}/train")
    assert f"best checkpoint valid: AUC={want['auc']:.4f}" in log, log[-3000:]


def test_sigterm_requeues_and_resumes_exactly(cluster: dict[str, str], sigterm_reference: tuple[str, Path],
                                              tmp_path: Path) -> None:
    """scancel --signal=TERM mid-epoch: every rank stops after the same step with a checkpoint and exits 143; the
    batch script requeues the job (--max_retries 1); the requeued job resumes and ends as the uninterrupted run."""
    data_dir, reference = sigterm_reference
    run = tmp_path / "run"
    job = _submit(cluster, data_dir, run, "--max_retries", "1")
    deadline = time.time() + 240
    while not any(e["event"] == "checkpoint" and e["epoch"] == 0 for e in _events(run)):
        assert time.time() < deadline, f"no mid-epoch checkpoint:\n{_job_logs(cluster, job)}"
        time.sleep(0.1)
    _cli(cluster, "scancel", "--signal=TERM", job)
    assert _wait_done(cluster, job, 300) == ["COMPLETED", "COMPLETED"], _job_logs(cluster, job)

    show = _cli(cluster, "scontrol", "show", "job", job)
    assert "Restarts=1" in show, show
    events = _events(run)
    stops = [e for e in events if e["event"] == "preempted"]
    resumes = [e for e in events if e["event"] == "resume"]
    assert len(stops) == 1 and [r["step"] for r in resumes] == [stops[0]["step"]], (stops, resumes)
    assert json.loads((run / "results.json").read_text()) == json.loads((reference / "results.json").read_text())
    assert _evals(run) == _evals(reference)
    err = "".join(p.read_text() for p in Path(cluster["SUBMIT_DIR"]).glob(f"slurm-{job}-train-*.err"))
    assert "stopped by SIGTERM after step" in err, err[-3000:]
