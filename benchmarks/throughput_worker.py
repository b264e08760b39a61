"""What each rank of the throughput benchmark runs: every job (model x variant x sharding x batch) in order.

``fused`` jobs time the trainer's own stack (``build_training_stack``: sharded model, fused optimisers,
``TrainPipelineSparseDist``); ``plain_*`` jobs time the same model with per-field ``nn.Embedding`` tables and a plain
step loop (the module docstring of ``throughput.py`` says what each variant is).
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import statistics
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any

import common
from batches import feature_spec, make_batches
from timing import time_steps


@dataclass(frozen=True)
class Job:
    """One configuration to time."""

    variant: str  # fused | plain_dense | plain_sparse
    model: str
    sharding: str  # a ShardingType value for fused, "-" for the plain paths
    world_size: int
    batch_size: int  # global


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs besides the job list."""

    max_rows_per_table: int
    embedding_dim: int
    num_batches: int
    warmup_steps: int
    windows: int
    window_seconds: float
    zipf: float
    seed: int
    cpu_allocator: str = "tuned"  # training.cpu_allocator of the trainer (glibc malloc thresholds)



# ---------------------------------------------------------------------------------------- the per-field nn.Embedding
def plain_embeddings_class() -> type:
    import torch
    from torch import nn
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

    class PerFieldEmbeddings(nn.Module):
        """Drop-in for an EmbeddingBagCollection with one id per sample and field: one ``nn.Embedding`` per field.

        This is how FuxiCTR-style code embeds fields (a ModuleDict of ``nn.Embedding``, looked up field by field and
        stacked). Returns a KeyedTensor laid out like the EBC's pooled output, so the rest of the model is untouched.
        """

        def __init__(self, configs: list[Any], init_std: float, sparse: bool) -> None:
            super().__init__()
            self.keys = [name for cfg in configs for name in cfg.feature_names]
            self.dims = [cfg.embedding_dim for cfg in configs]
            self.tables = nn.ModuleList(nn.Embedding(cfg.num_embeddings, cfg.embedding_dim, sparse=sparse)
                                        for cfg in configs)
            for table in self.tables:
                nn.init.normal_(table.weight, std=init_std)

        def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
            ids = features.values().view(len(self.tables), -1)  # one id per sample: [F, B], keys in table order
            pooled = torch.cat([table(ids[i]) for i, table in enumerate(self.tables)], dim=1)
            return KeyedTensor(keys=self.keys, length_per_key=self.dims, values=pooled)

    return PerFieldEmbeddings


def build_plain_model(name: str, spec: Any, dim: int, init_std: float, model_cfg: Any, sparse: bool) -> Any:
    """The registry model with every EmbeddingBagCollection swapped for per-field ``nn.Embedding`` tables."""
    import torch
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    from dlf_torchrec.models.registry import build_model

    model = build_model(name, spec, dim, init_std, model_cfg, device=torch.device("meta"))
    per_field = plain_embeddings_class()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, EmbeddingBagCollection):
                setattr(module, child_name, per_field(child.embedding_bag_configs(), init_std, sparse))
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise RuntimeError(f"{name}: parameters left on the meta device after the swap: {leftover[:3]}")
    return model



def run_fused(job: Job, settings: Settings, ctx: Any, spec: Any, batches: list[Any]) -> tuple[list[float], int]:
    import torch

    from dlf_torchrec.config import build_config
    from dlf_torchrec.training.stack import build_training_stack

    raw: dict[str, Any] = {"model": {"name": job.model}, "features": {"embedding_dim": settings.embedding_dim},
                           "sharding": {"type": job.sharding}, "training": {"batch_size": job.batch_size}}
    if job.sharding == "data_parallel":  # replicated tables are trained by a torch optimiser (the dense kernel)
        raw["optimizer"] = {"sparse": {"name": "adam", "lr": 1e-3, "kernel": "dense"}}
    cfg = build_config(raw)
    torch.manual_seed(settings.seed)
    stack = build_training_stack(cfg, ctx, spec)
    dmp, pipeline = stack.dmp, stack.pipeline
    dmp.train()
    data = itertools.cycle(batches)
    try:
        return time_steps(lambda: pipeline.progress(data), settings.warmup_steps, settings.windows,
                          settings.window_seconds, job.world_size)
    finally:
        pipeline.detach()


def run_plain(job: Job, settings: Settings, spec: Any, batches: list[Any]) -> tuple[list[float], int]:
    import torch
    from torch import nn

    from dlf_torchrec.config import build_config
    from dlf_torchrec.training.task import TrainTask

    cfg = build_config({"model": {"name": job.model}})
    torch.manual_seed(settings.seed)
    sparse = job.variant == "plain_sparse"
    task = TrainTask(build_plain_model(job.model, spec, settings.embedding_dim, cfg.features.init_std, cfg.model,
                                       sparse))
    task.train()
    lr, clip = cfg.optimizer.dense.lr, cfg.optimizer.grad_clip_norm
    if sparse:
        table_params = [p for m in task.modules() if isinstance(m, nn.Embedding) for p in m.parameters()]
        ids = {id(p) for p in table_params}
        dense_params = [p for p in task.parameters() if id(p) not in ids]
        optimizers: list[Any] = [torch.optim.SparseAdam(table_params, lr=lr), torch.optim.Adam(dense_params, lr=lr)]
        clip_params = dense_params
    else:
        optimizers = [torch.optim.Adam(task.parameters(), lr=lr)]
        clip_params = list(task.parameters())
    data = itertools.cycle(batches)

    def step() -> None:
        batch = next(data)
        for opt in optimizers:
            opt.zero_grad()
        loss, _ = task(batch)
        loss.backward()
        nn.utils.clip_grad_norm_(clip_params, clip)
        for opt in optimizers:
            opt.step()

    return time_steps(step, settings.warmup_steps, settings.windows, settings.window_seconds, 1)


def run_rank(rank: int, world_size: int, port: int, jobs: list[Job], settings: Settings, out_dir: str) -> None:
    """One rank: run every job in order, write ``rank{r}.jsonl`` (one result per job, flushed as it goes)."""
    from dlf_torchrec.distenv import rank_env

    os.environ.update(rank_env(rank, world_size, port))

    from dlf_torchrec.training.allocator import configure_cpu_allocator

    configure_cpu_allocator(settings.cpu_allocator)  # before torch allocates, as the trainer does

    import torch

    from dlf_torchrec.parallel import init_distributed, shutdown_distributed

    common.quiet_torchrec()

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    ctx = init_distributed("cpu")
    spec = feature_spec(settings.max_rows_per_table)
    path = os.path.join(out_dir, f"rank{rank}.jsonl")
    try:
        for job in jobs:
            batches: list[Any] = []
            gc.collect()
            reset_ok = common.reset_peak_rss()
            result: dict[str, Any] = {"job": asdict(job), "rss_reset": reset_ok}
            try:
                batches = make_batches(spec, job.batch_size // world_size, settings.num_batches, settings.zipf,
                                       settings.seed + 1000 * rank)
                if job.variant == "fused":
                    elapsed, steps = run_fused(job, settings, ctx, spec, batches)
                else:
                    elapsed, steps = run_plain(job, settings, spec, batches)
                result.update(elapsed=elapsed, steps_per_window=steps, error=None)
            except Exception:  # noqa: BLE001 - one failing configuration is reported, the others still run
                result.update(elapsed=[], steps_per_window=0, error=traceback.format_exc(limit=3))
            result["peak_rss_mib"] = common.peak_rss_mib()
            if rank == 0:
                rate = (f"{job.batch_size * result['steps_per_window'] / statistics.median(result['elapsed']):.0f} "
                        "samples/s" if result["elapsed"] else "FAILED")
                print(f"  {job.variant} {job.model} {job.sharding} w{world_size} b{job.batch_size}: {rate}, "
                      f"peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
            with open(path, "a") as f:
                f.write(json.dumps(result) + "\n")
            del batches
    finally:
        shutdown_distributed()


def run_world(jobs: list[Job], world_size: int, settings: Settings, timeout_s: float) -> list[list[dict[str, Any]]]:
    """Spawn ``world_size`` gloo ranks that run ``jobs``; return each rank's list of results."""
    import torch.multiprocessing as mp

    from dlf_torchrec.distenv import free_port

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        context = mp.start_processes(run_rank, args=(world_size, port, jobs, settings, tmp), nprocs=world_size,
                                     start_method="spawn", join=False)
        deadline = time.monotonic() + timeout_s
        try:
            while not context.join(timeout=5):
                if time.monotonic() > deadline:
                    print(f"world size {world_size}: ranks still running after {timeout_s:.0f} s: stopped; "
                          "configurations not reached are reported as errors", flush=True)
                    break
        except Exception as e:  # noqa: BLE001 - a crashed rank (e.g. killed for memory): keep what finished
            print(f"world size {world_size}: {type(e).__name__}: {e}", flush=True)
        finally:
            for proc in context.processes:
                if proc.is_alive():
                    proc.kill()
        results = []
        for rank in range(world_size):
            path = os.path.join(tmp, f"rank{rank}.jsonl")
            with open(path) if os.path.exists(path) else open(os.devnull) as f:
                results.append([json.loads(line) for line in f])
    return results

