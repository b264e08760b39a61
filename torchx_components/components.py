# ruff: noqa: UP006, UP007, UP035, UP045
# TorchX parses component signatures by their AST and accepts only ``Optional``, ``Dict`` and ``List`` from typing
# (not ``X | None`` / ``dict[...]``), so the pyupgrade rules are off for this file.
"""TorchX components for dlf_torchrec: ``train``, ``preprocess``, ``benchmark`` and ``sweep``.

Run them by file path from the repository root (see docs/launching.md)::

    torchx run -s local_cwd torchx_components/components.py:train -j 1x2 --config configs/synthetic/dcnv2.yaml
    torchx run -s local_cwd torchx_components/components.py:preprocess --config configs/criteo/dcnv2.yaml
    torchx run -s local_cwd torchx_components/components.py:benchmark -- --world-sizes 1 2
    torchx run -s local_cwd torchx_components/components.py:sweep --space sweep.yaml -- --scheduler slurm
    torchx run torchx_components/components.py:train --help

``train`` is a thin wrapper over the builtin ``dist.ddp`` (torchrun with c10d rendezvous on the first node), so every
scheduler that runs ``dist.ddp`` runs it. ``preprocess``, ``benchmark`` and ``sweep`` are single ``python`` processes
(the benchmark spawns its own ranks; the sweep launches each trial as a ``train`` job through TorchX).
"""

from typing import Dict, List, Optional

import torchx
import torchx.specs as specs
from torchx.components.dist import ddp, parse_nnodes

TRAIN_MODULE = "dlf_torchrec.train"
PREPROCESS_MODULE = "dlf_torchrec.data.preprocess"
BENCHMARK_SCRIPT = "benchmarks/throughput.py"
SWEEP_MODULE = "dlf_torchrec.sweep"
DEFAULT_CONFIG = "configs/synthetic/dcnv2.yaml"

NCCL_ENV_DEFAULTS: Dict[str, str] = {
    # Print NCCL warnings and errors (e.g. a failed IB/socket transport) without the INFO-level init chatter;
    # set NCCL_DEBUG=INFO through ``env`` to debug topology or interface selection.
    "NCCL_DEBUG": "WARN",
    # A NCCL error or collective timeout on one rank aborts its communicators and kills the process, so
    # torchrun tears the whole group down (and max_retries can restart it) instead of leaving the other ranks
    # blocked in an all-to-all until the job's wall-clock limit.
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
}
"""Environment defaults set for GPU jobs (``gpu > 0`` or a named resource with GPUs). Values given through
``env`` win. Fabric-specific settings (NCCL_SOCKET_IFNAME, NCCL_IB_DISABLE, NCCL_IB_HCA) depend on the cluster and
are not defaulted: pass them through ``env`` (docs/launching.md). CPU jobs get none of these: dlf_torchrec picks the
gloo backend itself when ``training.device`` is ``auto`` and no GPU is visible."""


def num_gpus(cpu: int, gpu: int, memMB: int, h: Optional[str]) -> int:
    """GPUs per node that the job requests: from the named resource ``h`` if given, else ``gpu``."""
    return specs.resource(cpu=cpu, gpu=gpu, memMB=memMB, h=h).gpu


MULTI_NODE_ENV_DEFAULTS: Dict[str, str] = {
    # torchrun shares its rendezvous store with the workers across restarts and names each attempt by a per-agent
    # restart count, which the nodes disagree on after one node's worker died: the restarted workers then hang
    # (pytorch#135712, docs/reliability.md). Opting out gives every rendezvous round a fresh store.
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
}
"""Environment defaults set for multi-node jobs (``-j NxM`` with N > 1 or an elastic range); ``env`` wins."""


def job_env(env: Optional[Dict[str, str]], gpus: int, max_nodes: int = 1) -> Dict[str, str]:
    """The user's ``env`` plus :data:`NCCL_ENV_DEFAULTS` for GPU jobs and :data:`MULTI_NODE_ENV_DEFAULTS` for jobs
    of more than one node (user values take precedence)."""
    merged = dict(env or {})
    defaults = {**(NCCL_ENV_DEFAULTS if gpus > 0 else {}), **(MULTI_NODE_ENV_DEFAULTS if max_nodes > 1 else {})}
    for key, value in defaults.items():
        merged.setdefault(key, value)
    return merged


def train(
    *overrides: str,
    config: str = DEFAULT_CONFIG,
    script: Optional[str] = None,
    j: str = "1x2",
    image: str = torchx.IMAGE,
    name: str = "/",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    mounts: Optional[List[str]] = None,
    max_retries: int = 0,
    rdzv_backend: str = "c10d",
    rdzv_port: int = 29500,
    debug: bool = False,
) -> specs.AppDef:
    """
    Trains a dlf_torchrec CTR model on nnodes x nproc_per_node ranks (torchrun via dist.ddp).

    Runs ``python -m dlf_torchrec.train --config CONFIG [OVERRIDES...]`` on every rank. Rank 0 preprocesses the
    dataset on first use; checkpoints, metrics.jsonl and results.json go to ``training.output_dir``, which must be
    on a filesystem shared by all nodes for multi-node jobs. CPU runs use gloo, GPU runs NCCL (chosen by
    dlf_torchrec from training.device=auto); GPU runs get NCCL_DEBUG=WARN and TORCH_NCCL_ASYNC_ERROR_HANDLING=1,
    multi-node runs TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (restarts after one node's failure), unless ``env`` sets
    them.

    Usage: torchx run -s local_cwd torchx_components/components.py:train -j 1x2 training.epochs=1
    Usage: torchx run -s slurm -cfg partition=gpu,time=04:00:00 torchx_components/components.py:train -j 4x8
    --gpu 8 --config configs/criteo/dlf.yaml dataset.output_dir=/shared/dlf/criteo
    training.output_dir=/shared/dlf/runs/criteo_dlf

    Args:
        overrides: config overrides ``key.sub=value`` applied after the YAML (e.g. training.epochs=3
            model.dropout=0.1); put ``--`` before them if the first one starts with ``-``
        config: experiment YAML, relative to the working directory (repo root / image WORKDIR) or absolute
        script: run this script file instead of ``-m dlf_torchrec.train`` (e.g. dlf_torchrec/train.py)
        j: [{min_nnodes}:]{nnodes}x{nproc_per_node}, e.g. 1x2 (one node, 2 ranks) or 4x8; with GPUs
            nproc_per_node must not exceed the GPUs per node
        image: image (docker/k8s) or working directory (local_cwd, slurm) the job runs in
        name: job name ``{experimentname}/{runname}``, ``{experimentname}/``, ``/{runname}`` or ``{runname}``
        cpu: CPUs per node (replica); ignored if ``h`` is given
        gpu: GPUs per node (replica); > 0 adds the NCCL env defaults; ignored if ``h`` is given
        memMB: host memory per node in MB; ignored if ``h`` is given
        h: a registered named resource (e.g. aws_p4d.24xlarge); takes precedence over cpu, gpu, memMB
        env: environment variables for every rank, e.g. NCCL_SOCKET_IFNAME=eth0,NCCL_IB_DISABLE=1
        mounts: mounts into the worker containers, e.g. type=volume,src=criteo-pvc,dst=/data (k8s PVC) or
            type=bind,src=/shared,dst=/shared; see the scheduler's documentation
        max_retries: number of scheduler retries of the whole job; on Slurm also the number of requeues after a
            SIGTERM (preemption, scancel --signal=TERM, SBATCH_SIGNAL=TERM@secs before the time limit), on which
            every rank checkpoints after the same step and exits 143 (torchx always submits with --requeue)
        rdzv_backend: torchrun rendezvous backend (c10d hosts the store on the first node; static, etcd)
        rdzv_port: port of the c10d store on the first node (multi-node only; one node picks a free port)
        debug: add torchx's debug env (TORCH_DISTRIBUTED_DEBUG=DETAIL, NCCL_DESYNC_DEBUG=1, ...)
    """
    args = ["--config", config, *overrides]
    return ddp(
        *args,
        script=script,
        m=None if script else TRAIN_MODULE,
        image=image,
        name=name,
        h=h,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        j=j,
        env=job_env(env, num_gpus(cpu, gpu, memMB, h), parse_nnodes(j)[1]),
        max_retries=max_retries,
        rdzv_port=rdzv_port,
        rdzv_backend=rdzv_backend,
        mounts=mounts,
        debug=debug,
    )


def single_process_app(name: str, role: str, args: List[str], image: str, cpu: int, gpu: int, memMB: int,
                       h: Optional[str], env: Optional[Dict[str, str]], mounts: Optional[List[str]],
                       max_retries: int) -> specs.AppDef:
    """One ``python ARGS...`` process on one node (no torchrun): the shape of ``preprocess`` and ``benchmark``."""
    return specs.AppDef(
        name=name,
        roles=[
            specs.Role(
                name=role,
                image=image,
                entrypoint="python",
                args=list(args),
                env=job_env(env, num_gpus(cpu, gpu, memMB, h)),
                num_replicas=1,
                resource=specs.resource(cpu=cpu, gpu=gpu, memMB=memMB, h=h),
                max_retries=max_retries,
                mounts=specs.parse_mounts(mounts) if mounts else [],
            )
        ],
    )


def preprocess(
    *overrides: str,
    config: str = DEFAULT_CONFIG,
    image: str = torchx.IMAGE,
    name: str = "dlf-preprocess",
    cpu: int = 4,
    memMB: int = 16384,
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    mounts: Optional[List[str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """
    Preprocesses a dataset once (one process on one node): python -m dlf_torchrec.data.preprocess.

    Writes the processed splits and vocabularies to ``dataset.output_dir``; run it before a multi-node ``train``
    so that the training job starts on ready data (``train`` would otherwise preprocess on rank 0 while the other
    ranks wait). Point ``dataset.output_dir`` at a filesystem the training nodes share.

    Usage: torchx run -s local_cwd torchx_components/components.py:preprocess --config configs/criteo/dcnv2.yaml
    Usage: torchx run -s slurm -cfg partition=cpu torchx_components/components.py:preprocess
    --config configs/criteo/dcnv2.yaml dataset.output_dir=/shared/dlf/criteo

    Args:
        overrides: config overrides ``key.sub=value`` (e.g. dataset.output_dir=/shared/dlf/criteo); preprocess
            flags go here too, after ``--`` (e.g. -- --force dataset.min_count=10)
        config: experiment YAML whose ``dataset`` section describes the raw data and the output directory
        image: image (docker/k8s) or working directory (local_cwd, slurm) the job runs in
        name: job name
        cpu: CPUs for the process; ignored if ``h`` is given
        memMB: host memory in MB; ignored if ``h`` is given
        h: a registered named resource; takes precedence over cpu, memMB
        env: environment variables, e.g. FOO=1,BAR=2
        mounts: mounts into the container, e.g. type=volume,src=criteo-pvc,dst=/data
        max_retries: number of scheduler retries
    """
    return single_process_app(name, "preprocess", ["-m", PREPROCESS_MODULE, "--config", config, *overrides],
                              image, cpu, 0, memMB, h, env, mounts, max_retries)


def benchmark(
    *script_args: str,
    script: str = BENCHMARK_SCRIPT,
    image: str = torchx.IMAGE,
    name: str = "dlf-benchmark",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 16384,
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    mounts: Optional[List[str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """
    Runs a throughput benchmark: one ``python SCRIPT [SCRIPT_ARGS...]`` process on one node.

    Not under torchrun: benchmarks/throughput.py spawns its own ranks for each world size it measures (its
    --world-sizes option), so it runs as a single process holding the whole node; give it the node's CPUs.
    Compare timings only between runs on the same hardware.

    Usage: torchx run -s local_cwd torchx_components/components.py:benchmark -- --help
    Usage: torchx run -s slurm -cfg partition=cpu torchx_components/components.py:benchmark --cpu 16
    -- --world-sizes 1 2

    Args:
        script_args: arguments of the benchmark script; put ``--`` before them if the first starts with ``-``
        script: benchmark script, relative to the working directory (repo root / image WORKDIR)
        image: image (docker/k8s) or working directory (local_cwd, slurm) the job runs in
        name: job name
        cpu: CPUs for the process (and the ranks it spawns); ignored if ``h`` is given
        gpu: GPUs; > 0 adds the NCCL env defaults; ignored if ``h`` is given
        memMB: host memory in MB; ignored if ``h`` is given
        h: a registered named resource; takes precedence over cpu, gpu, memMB
        env: environment variables, e.g. OMP_NUM_THREADS=1
        mounts: mounts into the container, e.g. type=bind,src=/shared,dst=/shared
        max_retries: number of scheduler retries
    """
    return single_process_app(name, "benchmark", [script, *script_args], image, cpu, gpu, memMB, h, env, mounts,
                              max_retries)


def sweep(
    *sweep_args: str,
    config: str = DEFAULT_CONFIG,
    space: str = "sweep.yaml",
    image: str = torchx.IMAGE,
    name: str = "dlf-sweep",
    cpu: int = 1,
    memMB: int = 4096,
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    mounts: Optional[List[str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """
    Runs a hyper-parameter sweep driver: one ``python -m dlf_torchrec.sweep`` process that launches every trial as
    a ``train`` job through TorchX (``--scheduler``, local_cwd by default) and keeps its state in its ``--dir``.

    The driver is light (it waits on its trials); give the trials' resources with the sweep's own options after
    ``--`` (-j, --cpu, --gpu, --memMB, --scheduler-cfg). Its directory and the trials' output directories must be on
    a filesystem the driver and the trials share. A retried or restarted driver continues the sweep.

    Usage: torchx run -s local_cwd torchx_components/components.py:sweep --space sweep.yaml
    --config configs/frappe/dcnv2.yaml -- --dir runs/sweeps/frappe_dcnv2
    Usage: torchx run -s slurm -cfg partition=cpu torchx_components/components.py:sweep --space sweep.yaml
    -- --scheduler slurm --scheduler-cfg partition=gpu -j 1x8 --gpu 8 --dir /shared/sweeps/criteo

    Args:
        sweep_args: options and overrides of ``python -m dlf_torchrec.sweep`` (``--dir``, ``--scheduler``, ``-j``,
            ``--trials``, ``--top-k``, ``--seeds``, ``key=value``...); put ``--`` before them
        config: base experiment YAML of every trial
        space: sweep file (params, sampler, trials, concurrency, pruner)
        image: image (docker/k8s) or working directory (local_cwd, slurm) the driver runs in
        name: job name
        cpu: CPUs of the driver; ignored if ``h`` is given
        memMB: host memory of the driver in MB; ignored if ``h`` is given
        h: a registered named resource for the driver
        env: environment variables of the driver
        mounts: mounts into the driver's container, e.g. type=bind,src=/shared,dst=/shared
        max_retries: scheduler retries of the driver (a restarted driver continues the sweep)
    """
    return single_process_app(name, "sweep", ["-m", SWEEP_MODULE, "--config", config, "--space", space, *sweep_args],
                              image, cpu, 0, memMB, h, env, mounts, max_retries)
