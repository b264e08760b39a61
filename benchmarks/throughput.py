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
import os
import sys
import time
from dataclasses import asdict
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
from throughput_report import add_ratios, print_table, summarise, write_results  # noqa: E402
from throughput_worker import Job, Settings, run_world  # noqa: E402

from dlf_torchrec import cli  # noqa: E402

SHARDING_TYPES = ("table_wise", "column_wise", "row_wise", "data_parallel")
VARIANTS = ("fused", "plain_dense", "plain_sparse")


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
    settings = Settings(max_rows_per_table=args.max_rows_per_table, embedding_dim=args.embedding_dim,
                        num_batches=args.num_batches, warmup_steps=args.warmup_steps, windows=args.windows,
                        window_seconds=args.window_seconds, zipf=args.zipf, seed=args.seed,
                        cpu_allocator=args.cpu_allocator)
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
