"""Training throughput: TorchRec sharded + fused path vs the per-field ``nn.Embedding`` path, on Criteo-shaped data.

What is measured (one row per configuration):

* ``fused``: the trainer's own path. The model from the registry (``build_model`` on the meta device) is wrapped in
  ``TrainTask`` and sharded by ``shard_model`` (EmbeddingShardingPlanner forced to one sharding type,
  DistributedModelParallel, FBGEMM TBE with the fused EXACT_ROWWISE_ADAGRAD optimiser inside backward); the dense
  parameters use Adam (``build_optimizer``, gradient clipping at norm 10, as the trainer does). Steps go through
  TorchRec's ``TrainPipelineSparseDist.progress`` (forward + backward + optimiser step, input dist pipelined), exactly
  as ``dlf_torchrec.training.loop`` runs them. World size 2 = two spawned gloo processes on this machine.
* ``plain_dense``: what users get from a FuxiCTR-style implementation. The *same* model object (same over-arch, same
  field order, dims, cardinalities, init) with every ``EmbeddingBagCollection`` replaced by one ``torch.nn.Embedding``
  per field (dense gradients), one ``torch.optim.Adam`` over *all* parameters, ``clip_grad_norm_(10)`` over all
  parameters, ``zero_grad()`` each step: a plain step loop, one process.
* ``plain_sparse`` (extra, labelled): as ``plain_dense`` but ``nn.Embedding(sparse=True)`` + ``torch.optim.SparseAdam``
  on the tables, Adam on the rest (clipping on the dense parameters only: torch cannot clip sparse gradients).

Samples/s is *global* (all ranks): ``batch_size`` is the global batch as in ``training.batch_size`` (each of W ranks
gets ``batch_size / W``). Each configuration runs warm-up steps, then ``--windows`` timed windows of
``steps_per_window`` steps (chosen from the warm-up step time so that a window lasts about ``--window-seconds``; on
2 ranks the slower rank's window time counts); the reported figure is the median window, min and max beside it.
Peak RSS is per rank (kernel high-water mark reset before each configuration, see ``benchmarks/common.py``); the
table shows the largest rank's.

Data: 13 dense + 26 categorical fields with the Criteo Kaggle (Display Advertising Challenge) cardinalities, each table
capped at ``--max-rows-per-table`` rows (default 1,000,000: the 5 fields above 1M ids -- 10.1M, 8.4M, 7.0M, 5.5M,
2.2M -- are capped, the other 21 keep their real size; 5.6M rows in all, 360 MB of fp32 weights at dim 16 instead of
2.2 GB uncapped). Ids are Zipf-distributed (exponent ``--zipf``, hot ids scattered over the table by a multiplicative
hash), dense values log-normal, labels Bernoulli(0.25); ``--num-batches`` distinct batches per rank are generated up
front (not timed) and cycled.

Run ``python benchmarks/throughput.py --help``; results go to ``--out`` (default ``benchmarks/results``):
``throughput.csv``, ``throughput.md``, ``throughput.png`` (bars per model/variant) and ``throughput_scaling.png``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402

from dlf_torchrec import cli  # noqa: E402

# Criteo Kaggle (Display Advertising Challenge, 45.8M rows) distinct values of C1..C26, as listed by the DLRM
# reference implementation for the Kaggle dataset.
CRITEO_KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992, 5461306, 10, 5652,
    2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)
NUM_DENSE = 13
SHARDING_TYPES = ("table_wise", "column_wise", "row_wise", "data_parallel")
VARIANTS = ("fused", "plain_dense", "plain_sparse")
COLUMNS = (
    "variant", "model", "sharding", "world_size", "batch_size", "batch_per_rank", "samples_per_s",
    "samples_per_s_min", "samples_per_s_max", "windows", "steps_per_window", "ratio_fused_vs_plain_dense",
    "peak_rss_mib", "peak_rss_mib_per_rank", "step_loop", "table_rows", "embedding_dim", "status",
)


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


# ------------------------------------------------------------------------------------------------------------ data
def cardinalities(max_rows_per_table: int) -> list[int]:
    """Table rows per categorical field: real Criteo size + PAD + OOV, capped at ``max_rows_per_table``."""
    cap = max_rows_per_table if max_rows_per_table > 0 else sys.maxsize
    return [max(3, min(c + 2, cap)) for c in CRITEO_KAGGLE_CARDINALITIES]


def feature_spec(max_rows_per_table: int) -> Any:
    from dlf_torchrec.data.meta import CategoricalField, FeatureSpec

    return FeatureSpec(
        categorical=tuple(CategoricalField(f"C{i + 1}", v) for i, v in enumerate(cardinalities(max_rows_per_table))),
        dense=tuple(f"I{i + 1}" for i in range(NUM_DENSE)),
    )


def make_batches(spec: Any, batch: int, count: int, zipf: float, seed: int) -> list[Any]:
    """``count`` Criteo-shaped torchrec Batches of ``batch`` rows: Zipf ids in [1, rows-1], one id per field."""
    import numpy as np
    import torch
    from torchrec.datasets.utils import Batch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        cols = []
        for f in spec.categorical:
            span = f.vocab_size - 2  # ids 1 .. vocab_size - 2 (0 = PAD, vocab_size - 1 = OOV)
            rank = (rng.zipf(zipf, size=batch) - 1) % span  # 0 = hottest
            cols.append((rank * 2654435761) % span + 1)  # scatter hot ids over the table
        ids = torch.from_numpy(np.stack(cols).astype(np.int64))  # [F, B]: KJT values are key-major
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=spec.categorical_names, values=ids.flatten(), lengths=torch.ones(ids.numel(), dtype=torch.int32)
        )
        dense = torch.from_numpy(np.log1p(rng.lognormal(1.0, 1.5, size=(batch, NUM_DENSE))).astype(np.float32))
        labels = torch.from_numpy((rng.random(batch) < 0.25).astype(np.float32))
        out.append(Batch(dense_features=dense, sparse_features=kjt, labels=labels))
    return out


# ---------------------------------------------------------------------------------------- the per-field nn.Embedding
def _plain_embeddings_class() -> type:
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
    per_field = _plain_embeddings_class()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, EmbeddingBagCollection):
                setattr(module, child_name, per_field(child.embedding_bag_configs(), init_std, sparse))
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise RuntimeError(f"{name}: parameters left on the meta device after the swap: {leftover[:3]}")
    return model


# ----------------------------------------------------------------------------------------------------------- timing
def _time_steps(step: Any, settings: Settings, world_size: int) -> tuple[list[float], int]:
    """Warm up, pick steps per window from the warm-up step time (agreed across ranks), time the windows.

    Returns (elapsed seconds per window, slowest rank's; steps per window).
    """
    import torch
    import torch.distributed as dist

    def sync() -> None:
        if world_size > 1:
            dist.barrier()

    step()  # first step: lazy initialisation, pipeline fill
    sync()
    t0 = time.perf_counter()
    for _ in range(max(1, settings.warmup_steps)):
        step()
    per_step = torch.tensor([(time.perf_counter() - t0) / max(1, settings.warmup_steps)])
    if world_size > 1:
        dist.all_reduce(per_step, op=dist.ReduceOp.MAX)
    steps = max(1, math.ceil(settings.window_seconds / max(float(per_step), 1e-6)))
    elapsed = []
    for _ in range(settings.windows):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        dt = torch.tensor([time.perf_counter() - t0])
        if world_size > 1:
            dist.all_reduce(dt, op=dist.ReduceOp.MAX)
        elapsed.append(float(dt))
    return elapsed, steps


def _run_fused(job: Job, settings: Settings, ctx: Any, spec: Any, batches: list[Any]) -> tuple[list[float], int]:
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
        return _time_steps(lambda: pipeline.progress(data), settings, job.world_size)
    finally:
        pipeline.detach()


def _run_plain(job: Job, settings: Settings, spec: Any, batches: list[Any]) -> tuple[list[float], int]:
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

    return _time_steps(step, settings, 1)


def _worker(rank: int, world_size: int, port: int, jobs: list[Job], settings: Settings, out_dir: str) -> None:
    """One rank: run every job in order, write ``rank{r}.jsonl`` (one result per job, flushed as it goes)."""
    from dlf_torchrec.distenv import rank_env

    os.environ.update(rank_env(rank, world_size, port))
    import logging
    import warnings

    from dlf_torchrec.training.allocator import configure_cpu_allocator

    configure_cpu_allocator(settings.cpu_allocator)  # before torch allocates, as the trainer does

    import torch

    from dlf_torchrec.parallel import init_distributed, shutdown_distributed

    warnings.filterwarnings("ignore")
    for name in ("torchrec", ""):  # planner advice and data_parallel "Sharding spec not found" (root logger)
        logging.getLogger(name).setLevel(logging.ERROR)

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
                    elapsed, steps = _run_fused(job, settings, ctx, spec, batches)
                else:
                    elapsed, steps = _run_plain(job, settings, spec, batches)
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
        context = mp.start_processes(_worker, args=(world_size, port, jobs, settings, tmp), nprocs=world_size,
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


# ---------------------------------------------------------------------------------------------------------- results
def summarise(job: Job, per_rank: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """One CSV row from the ranks' results of one job."""
    errors = [r["error"] for r in per_rank if r.get("error")]
    row: dict[str, Any] = {
        **asdict(job),
        "batch_per_rank": job.batch_size // job.world_size,
        "windows": settings.windows,
        "step_loop": "TrainPipelineSparseDist" if job.variant == "fused" else "plain loop",
        "table_rows": sum(cardinalities(settings.max_rows_per_table)),
        "embedding_dim": settings.embedding_dim,
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in per_rank), 1),
        "peak_rss_mib_per_rank": ";".join(f"{r['peak_rss_mib']:.1f}" for r in per_rank),
        "samples_per_s": None, "samples_per_s_min": None, "samples_per_s_max": None,
        "steps_per_window": per_rank[0]["steps_per_window"], "ratio_fused_vs_plain_dense": None,
    }
    if errors or not per_rank[0]["elapsed"]:
        last = (errors[0] if errors else "no result").strip().splitlines()[-1]
        row["status"] = f"error: {last}"[:200]
        return row
    rates = [job.batch_size * row["steps_per_window"] / e for e in per_rank[0]["elapsed"]]
    row.update(samples_per_s=round(statistics.median(rates), 1), samples_per_s_min=round(min(rates), 1),
               samples_per_s_max=round(max(rates), 1),
               status="ok" if all(r["rss_reset"] for r in per_rank) else "ok (rss = process peak)")
    return row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """ratio_fused_vs_plain_dense on every fused row: its samples/s over plain_dense's at the same model and batch."""
    plain = {(r["model"], r["batch_size"]): r["samples_per_s"] for r in rows
             if r["variant"] == "plain_dense" and r.get("samples_per_s")}
    for r in rows:
        base = plain.get((r["model"], r["batch_size"]))
        if r["variant"] == "fused" and r.get("samples_per_s") and base:
            r["ratio_fused_vs_plain_dense"] = round(r["samples_per_s"] / base, 2)


def comparison_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and batch: the best 1-process fused sharding vs the plain paths."""
    out = []
    for model, batch in sorted({(r["model"], r["batch_size"]) for r in rows}):
        sel = [r for r in rows if r["model"] == model and r["batch_size"] == batch and r.get("samples_per_s")]
        fused = {r["sharding"]: r["samples_per_s"] for r in sel if r["variant"] == "fused" and r["world_size"] == 1}
        plain = {r["variant"]: r["samples_per_s"] for r in sel if r["variant"] != "fused"}
        tw = fused.get("table_wise")
        best = max(fused.items(), key=lambda kv: kv[1]) if fused else None
        dense, sparse = plain.get("plain_dense"), plain.get("plain_sparse")
        out.append({
            "model": model, "batch_size": batch,
            "fused_table_wise_w1": tw,
            "fused_best_w1": f"{best[1]:.0f} ({best[0]})" if best else None,
            "plain_dense": dense, "plain_sparse": sparse,
            "fused_tw / plain_dense": round(tw / dense, 2) if tw and dense else None,
            "fused_tw / plain_sparse": round(tw / sparse, 2) if tw and sparse else None,
        })
    return out


def plot_bars(rows: list[dict[str, Any]], path: str, stamp: dict[str, str]) -> None:
    """Grouped bars: one group per model, one bar per variant/sharding/world (largest batch size only)."""
    batch = max(r["batch_size"] for r in rows)
    sel = [r for r in rows if r["batch_size"] == batch]
    models = sorted({r["model"] for r in sel})
    labels = sorted({_label(r) for r in sel}, key=_label_order)
    fig, ax = common.new_figure(max(10.0, 1.2 * len(models) * max(1, len(labels)) / 3), 6.0)
    width = 0.8 / max(1, len(labels))
    cmap = __import__("matplotlib").colormaps["tab20"]
    for j, label in enumerate(labels):
        xs, ys = [], []
        for i, model in enumerate(models):
            value = next((r["samples_per_s"] for r in sel if r["model"] == model and _label(r) == label), None)
            xs.append(i - 0.4 + (j + 0.5) * width)
            ys.append(value or 0.0)
        ax.bar(xs, ys, width=width, label=label, color=cmap(j % 20))
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("training samples/s (global, median window)")
    ax.set_title(f"Training throughput, global batch {batch}, Criteo-shaped synthetic data")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    common.save_figure(fig, path, stamp)


def _label(r: dict[str, Any]) -> str:
    if r["variant"] == "fused":
        return f"fused {r['sharding']} w{r['world_size']}"
    return f"{r['variant']} (nn.Embedding) w1"


def _label_order(label: str) -> tuple[int, str]:
    return (0 if label.startswith("fused") else 1, label)


def plot_scaling(rows: list[dict[str, Any]], path: str, stamp: dict[str, str]) -> None:
    """Samples/s vs world size (or vs batch size when only one world size ran): one panel per model."""
    worlds = sorted({r["world_size"] for r in rows if r["variant"] == "fused"})
    by_world = len(worlds) > 1
    models = sorted({r["model"] for r in rows})
    fig, axes = common.new_figure(max(6.0, 4.0 * len(models)), 4.8, ncols=len(models))
    axes = axes if isinstance(axes, list) else [axes]
    batch = max(r["batch_size"] for r in rows)
    for ax, model in zip(axes, models, strict=True):
        sel = [r for r in rows if r["model"] == model and r["samples_per_s"]]
        for series in sorted({_series(r, by_world) for r in sel}):
            pts = sorted((r["world_size"] if by_world else r["batch_size"], r["samples_per_s"]) for r in sel
                         if _series(r, by_world) == series and (not by_world or r["batch_size"] == batch))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=series,
                        linestyle="--" if series.startswith("plain") else "-")
        ax.set_title(model)
        ax.set_xlabel("world size (gloo ranks)" if by_world else "global batch size")
        if by_world:
            ax.set_xticks(worlds)
        else:
            ax.set_xscale("log", base=2)
        ax.set_ylabel("samples/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"Throughput scaling ({'batch ' + str(batch) if by_world else 'world size 1 fused + plain'})")
    common.save_figure(fig, path, stamp)


def _series(r: dict[str, Any], by_world: bool) -> str:
    if r["variant"] == "fused":
        return f"fused {r['sharding']}" + ("" if by_world else f" w{r['world_size']}")
    return f"{r['variant']} (w1)"


def write_results(rows: list[dict[str, Any]], out: str, settings: Settings, stamp: dict[str, str],
                  total_s: float) -> list[str]:
    """throughput.csv / .md / .png / _scaling.png under ``out``."""
    os.makedirs(out, exist_ok=True)
    paths = [common.write_csv(os.path.join(out, "throughput.csv"), rows, COLUMNS, stamp)]
    table_cols = ["variant", "model", "sharding", "world_size", "batch_size", "samples_per_s", "samples_per_s_min",
                  "samples_per_s_max", "ratio_fused_vs_plain_dense", "peak_rss_mib", "peak_rss_mib_per_rank",
                  "status"]
    comp = comparison_rows(rows)
    comp_cols = list(comp[0]) if comp else []
    cap = f"{settings.max_rows_per_table:,}" if settings.max_rows_per_table else "no"
    total_rows = sum(cardinalities(settings.max_rows_per_table))
    setup = (
        f"- data: 13 dense + 26 categorical Criteo Kaggle fields, tables capped at {cap} rows ({total_rows:,} rows "
        f"in all), embedding dim "
        f"{settings.embedding_dim}, Zipf({settings.zipf}) ids, {settings.num_batches} distinct batches per rank\n"
        f"- timing: 1 + {settings.warmup_steps} warm-up steps, then {settings.windows} windows of ~"
        f"{settings.window_seconds} s; samples/s = global batch x steps / window time, median (min, max beside)\n"
        "- fused: shard_model (forced sharding type, FBGEMM TBE + fused EXACT_ROWWISE_ADAGRAD) + Adam on dense "
        "params, TrainPipelineSparseDist; world 2 = 2 spawned gloo processes on the same machine, each with "
        "cores/2 threads\n"
        "- plain_dense: same model with one torch.nn.Embedding per field (dense grads), one Adam on all params, "
        "clip_grad_norm_ 10, plain loop, 1 process (FuxiCTR style)\n"
        "- plain_sparse (extra): nn.Embedding(sparse=True) + SparseAdam on tables, Adam on the rest\n"
        f"- glibc malloc: `{settings.cpu_allocator}` in every process (training.cpu_allocator)\n"
        f"- whole run: {total_s:.0f} s; load average at start: {stamp.get('load_average_at_start')}"
    )
    sections = [
        ("Setup", setup),
        ("Fused (TorchRec) vs per-field nn.Embedding, 1 process", common.markdown_table(comp, comp_cols)
         if comp else "(no results)"),
        ("All configurations", common.markdown_table(rows, table_cols)),
    ]
    paths.append(common.write_markdown(os.path.join(out, "throughput.md"), "Training throughput", sections, stamp))
    ok = [r for r in rows if r.get("samples_per_s")]
    if ok:
        paths.append(os.path.join(out, "throughput.png"))
        plot_bars(ok, paths[-1], stamp)
        paths.append(os.path.join(out, "throughput_scaling.png"))
        plot_scaling(ok, paths[-1], stamp)
    return paths


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ["variant", "model", "sharding", "world_size", "batch_size", "samples_per_s", "ratio_fused_vs_plain_dense",
            "peak_rss_mib", "status"]
    widths = [max(len(c), *(len(common._fmt(r.get(c)) if r.get(c) is not None else "") for r in rows))
              for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        cells = [common._fmt(r.get(c)) if r.get(c) is not None else "" for c in cols]
        print("  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)))


# -------------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser("benchmarks/throughput", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run (<1 min): dnn+dcnv2, table_wise, world 1, batch 512, tables <= 1000 rows, "
                        "2 short windows; explicit flags still override")
    p.add_argument("--models", nargs="+", default=None, help="registered model names (default: all registered)")
    p.add_argument("--sharding", nargs="+", default=None, choices=SHARDING_TYPES,
                   help=f"sharding types for the fused path (default: {' '.join(SHARDING_TYPES)})")
    p.add_argument("--world-sizes", nargs="+", type=int, default=None, help="fused-path world sizes (default: 1 2)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=None, help="global batch sizes (default: 4096)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--max-rows-per-table", type=int, default=None,
                   help="cap on each table's rows; 0 = the real Criteo Kaggle sizes (33.8M rows) (default 1000000; "
                        "--quick 1000)")
    p.add_argument("--embedding-dim", type=int, default=16)
    p.add_argument("--windows", type=int, default=None, help="timed windows per configuration (default 5; quick 2)")
    p.add_argument("--window-seconds", type=float, default=None,
                   help="target duration of one window (default 0.5; quick 0.2)")
    p.add_argument("--warmup-steps", type=int, default=None, help="warm-up steps after the first (default 1)")
    p.add_argument("--num-batches", type=int, default=4, help="distinct pre-generated batches per rank")
    p.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of the ids (> 1)")
    p.add_argument("--seed", type=int, default=2019)
    p.add_argument("--cpu-allocator", choices=("tuned", "default"), default="tuned",
                   help="glibc malloc setting of every rank, as training.cpu_allocator (default tuned, the trainer's)")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds allowed per world size; configurations not reached by then are reported as errors")
    p.add_argument("--out", default=common.DEFAULT_RESULTS_DIR, help="results directory")
    args = p.parse_args(argv)
    quick = args.quick
    if args.models is None:
        from dlf_torchrec.models.registry import model_names

        names = model_names()
        args.models = [m for m in ("dnn", "dcnv2") if m in names] if quick else names
    args.sharding = args.sharding or (["table_wise"] if quick else list(SHARDING_TYPES))
    args.world_sizes = args.world_sizes or ([1] if quick else [1, 2])
    args.batch_sizes = args.batch_sizes or ([512] if quick else [4096])
    if args.max_rows_per_table is None:
        args.max_rows_per_table = 1000 if quick else 1_000_000
    args.windows = args.windows or (2 if quick else 5)
    args.window_seconds = args.window_seconds or (0.2 if quick else 0.5)
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else 1
    for b in args.batch_sizes:
        bad = [w for w in args.world_sizes if b % w]
        if bad:
            p.error(f"batch size {b} is not divisible by world size(s) {bad}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run("benchmarks/throughput", lambda: _benchmark(args, argv), args.debug)


def _benchmark(args: argparse.Namespace, argv: list[str] | None) -> int:
    stamp = common.make_stamp([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    settings = Settings(args.max_rows_per_table, args.embedding_dim, args.num_batches, args.warmup_steps,
                        args.windows, args.window_seconds, args.zipf, args.seed, args.cpu_allocator)
    jobs_by_world: dict[int, list[Job]] = {}
    for batch in args.batch_sizes:
        for model in args.models:
            for world in args.world_sizes:
                if "fused" in args.variants:
                    jobs_by_world.setdefault(world, []).extend(
                        Job("fused", model, s, world, batch) for s in args.sharding)
            for variant in ("plain_dense", "plain_sparse"):
                if variant in args.variants:
                    jobs_by_world.setdefault(1, []).append(Job(variant, model, "-", 1, batch))
    for jobs in jobs_by_world.values():
        # The headline comparison (fused table_wise vs the plain paths) first, so a run cut by --timeout has it.
        jobs.sort(key=lambda j: j.variant == "fused" and j.sharding != "table_wise")
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for world, jobs in sorted(jobs_by_world.items()):
        print(f"world size {world}: {len(jobs)} configurations ...", flush=True)
        t0 = time.perf_counter()
        per_rank = run_world(jobs, world, settings, args.timeout)
        for i, job in enumerate(jobs):
            results = [r[i] for r in per_rank if i < len(r)]
            if len(results) == world:
                rows.append(summarise(job, results, settings))
            else:
                rows.append({**asdict(job), "batch_per_rank": job.batch_size // world,
                             "status": "error: no result (rank crashed or --timeout reached)"})
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    add_ratios(rows)
    total = time.perf_counter() - start
    print_table(rows)
    for path in write_results(rows, args.out, settings, stamp, total):
        print("wrote", path)
    print(f"total {total:.0f} s")
    return 0 if all(str(r.get("status", "")).startswith("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
