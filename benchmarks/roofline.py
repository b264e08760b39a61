"""Roofline: this machine's fp32 GEMM peak and memory bandwidth, and how close each model's training step comes.

Measured one after the other in one process (``torch.get_num_threads()`` threads, the trainer's default): (1) the
GEMM peak, ``torch.mm`` on square fp32 matrices; (2) the memory bandwidth, a STREAM-like copy and triad over arrays
far larger than the caches; then per model, on Criteo_x4-shaped data (13 dense + 26 categorical fields, Criteo Kaggle
cardinalities capped at ``--max-rows-per-table``, Zipf ids, d 16) at the global batch: (3) the forward + backward
FLOPs per sample (``FlopCounterMode``: matmuls only, element-wise work and embedding gathers not counted); (4) the
same GEMMs timed alone at the model's own ``nn.Linear`` shapes (forward, grad-input and grad-weight products): the
best this model's layer shapes allow; (5) the trainer's step (``build_training_stack``: table-wise sharded fused
tables, Adam on the dense part, ``TrainPipelineSparseDist``) timed as the throughput benchmark times it, giving
achieved GFLOP/s as a share of both peaks; (6) a ``torch.profiler`` breakdown of that step's self CPU time into
GEMM, the fused embedding kernels (FBGEMM forward, backward + row-wise Adagrad), the dense optimiser, every other
op (element-wise, BatchNorm, dropout, copies) and the time outside ops (Python, bookkeeping); (7) the embedding
traffic, estimated as 5 row-sized fp32 transfers per field and sample (forward gather; backward gradient write and
read; row read and write in the fused update), as a share of the copy bandwidth. Each model is measured
``--repeats`` times, the models alternating, and the repeat with the median share of the peak is reported
(``roofline_runs.csv`` holds every repeat).

    python benchmarks/roofline.py                  # dnn dcnv2 tf4ctr dlf, batch 4096, 3 repeats, ~10 min on 2 cores
    python benchmarks/roofline.py --quick          # small shapes, seconds (the tests run this)

Outputs in ``--out`` (default ``benchmarks/results/roofline``): ``roofline.csv``, ``roofline.md`` (stamped) and
``roofline.png`` (achieved GFLOP/s per model against both peaks).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
from batches import feature_spec, make_batches, random_batch  # noqa: E402
from timing import best_rate, gemm_gflops, time_steps  # noqa: E402

from dlf_torchrec import cli  # noqa: E402

COLUMNS = ("model", "batch_size", "repeat", "mflop_per_sample", "linear_share", "shape_peak_gflops", "samples_per_s",
           "achieved_gflops", "square_peak_gflops", "pct_of_square_peak", "pct_of_square_peak_range",
           "pct_of_shape_peak", "gemm_pct", "embedding_pct", "dense_optimizer_pct", "other_ops_pct", "untracked_pct",
           "embedding_gb_per_s", "pct_of_copy_bandwidth")
EMBEDDING_TRANSFERS = 5  # row-sized fp32 transfers per field and sample, see the module docstring


def bandwidth_gbs(mib: int, seconds: float) -> tuple[float, float]:
    """(copy, triad) GB/s over fp32 arrays of ``mib`` MiB: copy moves 2 arrays, triad ``a = b + 3c`` moves 3."""
    import torch

    n = mib * 2**20 // 4
    a, b, c = torch.ones(n), torch.ones(n), torch.ones(n)
    copy = 2 * 4 * n * best_rate(lambda: a.copy_(b), seconds) / 1e9
    triad = 3 * 4 * n * best_rate(lambda: torch.add(b, c, alpha=3.0, out=a), seconds) / 1e9
    return copy, triad


def linear_shapes_and_flops(model: Any, batch: Any, batch_size: int) -> tuple[list[tuple[int, int, int]], float, float]:
    """The model's ``nn.Linear`` GEMMs as (rows, in, out) for one forward at ``batch_size``, the forward + backward
    MFLOP per sample of all matmuls, and the share of those FLOPs that the Linear layers do."""
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    shapes: list[tuple[int, int, int]] = []

    def hook(module: nn.Linear, inputs: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
        shapes.append((inputs[0].numel() // module.in_features, module.in_features, module.out_features))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with FlopCounterMode(display=False) as counter:
            model(batch.dense_features, batch.sparse_features).logits.float().sum().backward()
    finally:
        for h in handles:
            h.remove()
    total = counter.get_total_flops() / batch_size
    linear = sum(3 * 2 * r * i * o for r, i, o in shapes) / batch_size  # forward, grad-input, grad-weight
    return shapes, total / 1e6, linear / max(total, 1.0)


def shape_peak_gflops(shapes: list[tuple[int, int, int]], scale: int, seconds: float) -> float:
    """GFLOP/s of the Linear layers' forward, grad-input and grad-weight GEMMs timed alone, rows scaled by ``scale``
    (the counted batch -> the trained batch): FLOPs over the sum of the times."""
    flops, secs = 0.0, 0.0
    for rows, i, o in sorted(set(shapes)):
        count = shapes.count((rows, i, o))
        r = rows * scale
        for m, k, n in ((r, i, o), (r, o, i), (i, r, o)):  # y = xW^T; dx = dy W; dW = x^T dy
            rate = gemm_gflops(m, k, n, seconds) * 1e9
            flops += count * 2 * m * k * n
            secs += count * 2 * m * k * n / rate
    return flops / secs / 1e9 if secs else float("nan")


def categorise(name: str) -> str:
    if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation"):
        return "gemm"
    if name.startswith("fbgemm::"):
        return "embedding"
    if "_foreach" in name or "adam" in name.lower():
        return "dense_optimizer"
    return "other_ops"


def profile_shares(step: Callable[[], object], steps: int) -> dict[str, float]:
    """Percent of the steps' wall time per category (self CPU time of the ops; ``other_ops``: every other op, i.e.
    element-wise work, BatchNorm, dropout, copies, the loss); ``untracked``: the wall time outside any op (Python,
    the pipeline's and autograd's bookkeeping)."""
    from torch.profiler import ProfilerActivity, profile

    step()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall_us = (time.perf_counter() - t0) * 1e6
    by: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        by[categorise(ev.key)] += ev.self_cpu_time_total
    out = {k: 100 * by.get(k, 0.0) / wall_us for k in ("gemm", "embedding", "dense_optimizer", "other_ops")}
    out["untracked"] = max(0.0, 100 - sum(out.values()))
    return out


def measure_model(name: str, args: argparse.Namespace, ctx: Any, copy_gbs: float) -> dict[str, Any]:
    """One model's row; the square GEMM peak is measured again right before its step, so that a neighbour's load
    or a clock change moves both sides of the ratio alike."""
    import torch

    from dlf_torchrec.config import build_config
    from dlf_torchrec.training.stack import build_task, build_training_stack

    cfg = build_config({"model": {"name": name}, "features": {"embedding_dim": args.embedding_dim},
                        "sharding": {"type": "table_wise"}, "training": {"batch_size": args.batch_size}})
    spec = feature_spec(args.max_rows_per_table)
    torch.manual_seed(2019)
    counted = min(256, args.batch_size)
    model = build_task(cfg, spec).model.train()
    shapes, mflop, linear_share = linear_shapes_and_flops(model, random_batch(spec, counted, torch.Generator()
                                                                               .manual_seed(0)), counted)
    del model
    shape_peak = shape_peak_gflops(shapes, args.batch_size // counted, args.gemm_seconds)
    peak = max(gemm_gflops(n, n, n, args.gemm_seconds) for n in args.square)
    stack = build_training_stack(cfg, ctx, spec)
    stack.dmp.train()
    data = itertools.cycle(make_batches(spec, args.batch_size, args.num_batches, 1.1, 2019))

    def step() -> None:
        stack.pipeline.progress(data)

    try:
        elapsed, steps = time_steps(step, 1, args.windows, args.window_seconds, 1)
        shares = profile_shares(step, args.profile_steps)
    finally:
        stack.pipeline.detach()
    sps = statistics.median(steps * args.batch_size / t for t in elapsed)
    achieved = sps * mflop / 1e3
    emb_gbs = sps * len(spec.categorical) * args.embedding_dim * 4 * EMBEDDING_TRANSFERS / 1e9
    row = {"model": name, "batch_size": args.batch_size, "mflop_per_sample": round(mflop, 2),
           "linear_share": round(linear_share, 3), "shape_peak_gflops": round(shape_peak, 1),
           "samples_per_s": round(sps), "achieved_gflops": round(achieved, 1), "square_peak_gflops": round(peak, 1),
           "pct_of_square_peak": round(100 * achieved / peak, 1),
           "pct_of_shape_peak": round(100 * achieved / shape_peak, 1),
           **{f"{k}_pct": round(v, 1) for k, v in shares.items()},
           "embedding_gb_per_s": round(emb_gbs, 2), "pct_of_copy_bandwidth": round(100 * emb_gbs / copy_gbs, 1)}
    print("  " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    return row


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The repeat with the median share of the square peak (the lower middle one for an even count), with the
    range over all repeats beside it."""
    ordered = sorted(runs, key=lambda r: r["pct_of_square_peak"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["pct_of_square_peak_range"] = f"{ordered[0]['pct_of_square_peak']}-{ordered[-1]['pct_of_square_peak']}"
    return row


def plot(rows: list[dict[str, Any]], path: str, stamp: dict[str, str]) -> str:
    fig, ax = common.new_figure(9, 4.8)
    names = [r["model"] for r in rows]
    ax.bar(names, [r["achieved_gflops"] for r in rows], color="tab:blue", label="achieved (whole training step)")
    ax.scatter(names, [r["shape_peak_gflops"] for r in rows], marker="_", s=900, color="tab:orange", zorder=3,
               label="the model's own Linear GEMM shapes, timed alone")
    ax.scatter(names, [r["square_peak_gflops"] for r in rows], marker="_", s=900, color="k", zorder=3,
               label="square GEMM peak, measured right before the model's step")
    for i, r in enumerate(rows):
        ax.annotate(f"{r['pct_of_square_peak']:.0f}%", (i, r["achieved_gflops"]), ha="center", va="bottom")
    ax.set_ylabel("fp32 GFLOP/s (matmul FLOPs, forward + backward)")
    ax.set_title(f"Training step vs this machine's GEMM peak (batch {rows[0]['batch_size'] if rows else ''}; "
                 "median of the repeats)")
    top = max([*(r["square_peak_gflops"] for r in rows), *(r["shape_peak_gflops"] for r in rows)])
    ax.set_ylim(0, 1.4 * top)  # room for the legend above the markers
    ax.legend(fontsize=8, loc="upper right")
    return common.save_figure(fig, path, stamp)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser("benchmarks/roofline", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["dnn", "dcnv2", "tf4ctr", "dlf"])
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--embedding-dim", type=int, default=16)
    p.add_argument("--max-rows-per-table", type=int, default=1_000_000)
    p.add_argument("--square", nargs="+", type=int, default=[1024, 2048, 4096], help="square GEMM sizes")
    p.add_argument("--bandwidth-mib", type=int, default=512, help="size of each bandwidth array")
    p.add_argument("--gemm-seconds", type=float, default=0.5, help="timing of each GEMM shape (best of 3)")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--window-seconds", type=float, default=6.0)
    p.add_argument("--num-batches", type=int, default=4)
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="measurements per model (alternating); the median is kept")
    p.add_argument("--quick", action="store_true", help="dnn + dcnv2, batch 512, small tables and arrays")
    p.add_argument("--out", default=os.path.join(common.DEFAULT_RESULTS_DIR, "roofline"))
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batch_size, args.max_rows_per_table = ["dnn", "dcnv2"], 512, 1000
        args.square, args.bandwidth_mib, args.gemm_seconds = [256], 16, 0.05
        args.windows, args.window_seconds, args.profile_steps, args.repeats = 2, 0.2, 1, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run("benchmarks/roofline", lambda: _benchmark(args, argv), args.debug)


def _benchmark(args: argparse.Namespace, argv: list[str] | None) -> int:

    from dlf_torchrec.distenv import rank_env

    os.environ.update(rank_env(0, 1))
    common.quiet_torchrec()
    import torch

    from dlf_torchrec.parallel import init_distributed, shutdown_distributed
    from dlf_torchrec.training.allocator import configure_cpu_allocator

    configure_cpu_allocator("tuned")  # as the trainer does
    stamp = common.make_stamp([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    threads = torch.get_num_threads()
    square = {n: gemm_gflops(n, n, n, 2 * args.gemm_seconds) for n in args.square}
    copy_gbs, triad_gbs = bandwidth_gbs(args.bandwidth_mib, 2 * args.gemm_seconds)
    print(f"{threads} threads; square GEMM GFLOP/s {square}; copy {copy_gbs:.1f} GB/s, triad {triad_gbs:.1f} GB/s",
          flush=True)
    ctx = init_distributed("cpu")
    runs: list[dict[str, Any]] = []
    try:
        for repeat in range(args.repeats):  # models alternate, so slow phases of a shared machine hit all of them
            for name in args.models:
                runs.append({**measure_model(name, args, ctx, copy_gbs), "repeat": repeat})
    finally:
        shutdown_distributed()
    rows = [median_run([r for r in runs if r["model"] == name]) for name in args.models]
    machine = (f"{threads} torch threads; fp32 `torch.mm` square: " +
               ", ".join(f"{n}: {g:.1f} GFLOP/s" for n, g in square.items()) +
               f" (at the start; each model's row has the peak measured right before its step); bandwidth over "
               f"{args.bandwidth_mib} MiB arrays: copy {copy_gbs:.1f} GB/s, triad {triad_gbs:.1f} GB/s")
    common.write_csv(os.path.join(args.out, "roofline.csv"), rows, COLUMNS, stamp)
    common.write_markdown(os.path.join(args.out, "roofline.md"), "Roofline: training step vs this machine's limits",
                          [("What this is", __doc__.split("\n\n")[1].replace("\n", " ")),
                           ("This machine", machine), ("Per model", common.markdown_table(rows, COLUMNS))], stamp)
    plot(rows, os.path.join(args.out, "roofline.png"), stamp)
    common.write_csv(os.path.join(args.out, "roofline_runs.csv"), runs,
                     [c for c in COLUMNS if c != "pct_of_square_peak_range"], stamp)
    print(f"wrote {args.out}/roofline.{{csv,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
