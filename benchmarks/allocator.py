"""glibc malloc, default vs tuned (``training.cpu_allocator``): training samples/s, page faults and peak RSS.

For each model config, forward + backward + fused rowwise-Adagrad/Adam at batch 4096 on the config's dataset
feature spec (real cardinalities, uniform random ids), TorchRec ``table_wise``, ``TrainPipelineSparseDist``, 1
process: the timing worker of ``quality.py`` (``quality_throughput.py``). Each allocator setting runs in its own fresh
subprocess (malloc settings are process-wide), one after the other in the same run, and the table reports tuned /
default per model::

    python benchmarks/allocator.py            # Frappe configs: DNN, DCNv2, DLF (3 variants), TF4CTR; ~5 min
    python benchmarks/allocator.py --quick    # synthetic DCNv2 + DLF, small batch; < 1 min

Outputs in ``--out`` (default ``benchmarks/results``): ``allocator.csv``, ``allocator.md``, ``allocator.png``,
each stamped with the command, commit and machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
from quality_throughput import run_throughput_jobs  # noqa: E402

from dlf_torchrec import cli  # noqa: E402

ALLOCATORS = ("default", "tuned")
COLUMNS = (
    "label", "config", "overrides", "batch_size",
    "default_samples_per_s", "tuned_samples_per_s", "ratio_tuned_vs_default",
    "default_minor_faults_per_step", "tuned_minor_faults_per_step",
    "default_peak_rss_mib", "tuned_peak_rss_mib", "status",
)
JOBS = [
    ("DNN", "configs/frappe/dnn.yaml", []),
    ("DCNv2", "configs/frappe/dcnv2.yaml", []),
    ("DLF authors", "configs/frappe/dlf.yaml", []),
    ("DLF authors + NAF", "configs/frappe/dlf.yaml", ["model.naf=true"]),
    ("DLF paper", "configs/frappe/dlf.yaml", ["model.form=paper"]),
    ("TF4CTR SER+WSF", "configs/frappe/tf4ctr.yaml", []),
]
QUICK_JOBS = [  # main() points dataset.output_dir at a temporary folder
    ("DCNv2 (synthetic)", "configs/synthetic/dcnv2.yaml", ["dataset.synthetic_rows=3000"]),
    ("DLF authors + NAF (synthetic)", "configs/synthetic/dlf.yaml", ["dataset.synthetic_rows=3000", "model.naf=true"]),
]


def combine(jobs: list[tuple[str, str, list[str]]], batch_size: int,
            results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per job from {allocator: {label: worker result}}."""
    rows = []
    for label, config, overrides in jobs:
        row: dict[str, Any] = {"label": label, "config": config, "overrides": " ".join(overrides),
                               "batch_size": batch_size}
        errors = []
        for alloc in ALLOCATORS:
            r = results.get(alloc, {}).get(label)
            if r is None or "error" in r:
                errors.append(f"{alloc}: {r['error'] if r else 'no result (timeout or crash)'}")
                continue
            row[f"{alloc}_samples_per_s"] = round(r["samples_per_s"], 1)
            row[f"{alloc}_minor_faults_per_step"] = r["minor_faults_per_step"]
            row[f"{alloc}_peak_rss_mib"] = r["peak_rss_mib"]
        if not errors:
            row["ratio_tuned_vs_default"] = round(row["tuned_samples_per_s"] / row["default_samples_per_s"], 2)
        row["status"] = "ok" if not errors else ("error: " + "; ".join(errors))[:200]
        rows.append(row)
    return rows


def plot(rows: list[dict[str, Any]], path: str, stamp: dict[str, str]) -> None:
    ok = [r for r in rows if r["status"] == "ok"]
    fig, ax = common.new_figure(max(6.0, 1.4 * len(ok) + 2), 4.8)
    width = 0.38
    for i, alloc in enumerate(ALLOCATORS):
        xs = [j + (i - 0.5) * width for j in range(len(ok))]
        ax.bar(xs, [r[f"{alloc}_samples_per_s"] for r in ok], width, label=f"glibc {alloc}")
    for j, r in enumerate(ok):
        ax.annotate(f"{r['ratio_tuned_vs_default']:.2f}x", (j + 0.5 * width, r["tuned_samples_per_s"]),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(ok)), [r["label"] for r in ok], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("samples/s (fwd + bwd + optimiser)")
    ax.set_yscale("log")
    ax.set_title(f"glibc malloc default vs tuned, batch {ok[0]['batch_size'] if ok else '?'}")
    ax.legend(fontsize=8)
    common.save_figure(fig, path, stamp)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser("benchmarks/allocator", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="two synthetic configs, batch 512, short windows")
    p.add_argument("--batch-size", type=int, default=None, help="default 4096 (quick 512)")
    p.add_argument("--windows", type=int, default=None, help="timed windows per config (default 3; quick 1)")
    p.add_argument("--window-seconds", type=float, default=None, help="default 2.0 (quick 0.3)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per allocator subprocess")
    p.add_argument("--out", default=common.DEFAULT_RESULTS_DIR)
    args = p.parse_args(argv)
    args.batch_size = args.batch_size or (512 if args.quick else 4096)
    args.windows = args.windows or (1 if args.quick else 3)
    args.window_seconds = args.window_seconds or (0.3 if args.quick else 2.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run("benchmarks/allocator", lambda: _benchmark(args, argv), args.debug)


def _benchmark(args: argparse.Namespace, argv: list[str] | None) -> int:
    stamp = common.make_stamp([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    jobs = QUICK_JOBS if args.quick else JOBS
    start = time.perf_counter()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as work_dir:
        extra = [f"dataset.output_dir={work_dir}/data"] if args.quick else []
        specs = [{"label": label, "config": config, "overrides": [*overrides, *extra]}
                 for label, config, overrides in jobs]
        for alloc in ALLOCATORS:
            print(f"glibc malloc {alloc}: {len(specs)} configs at batch {args.batch_size} ...", flush=True)
            results[alloc] = run_throughput_jobs(specs, args.batch_size, args.windows, args.window_seconds,
                                                 alloc, args.timeout, work_dir)
    rows = combine(jobs, args.batch_size, results)
    total = time.perf_counter() - start
    os.makedirs(args.out, exist_ok=True)
    setup = (
        f"- per config: forward + backward + fused rowwise-Adagrad (tables) / Adam (dense) at batch {args.batch_size}, "
        "TorchRec `table_wise`, `TrainPipelineSparseDist`, 1 process, the config's dataset cardinalities with uniform "
        f"random ids; median of {args.windows} windows of ~{args.window_seconds} s after warm-up\n"
        "- default: glibc as it comes (large blocks mmapped per allocation, unmapped on free); tuned: "
        "`training.cpu_allocator: tuned` (mmap and trim thresholds 2 GiB, see dlf_torchrec/training/allocator.py); "
        "each in a fresh subprocess, default first, same run\n"
        "- minor faults per step: the process's minor page faults over warm-up + timed steps / steps; peak RSS: "
        "high-water mark over the same steps (reset before each config)\n"
        f"- whole run: {total:.0f} s; load average at start: {stamp.get('load_average_at_start')}"
    )
    cols = [c for c in COLUMNS if c not in ("config", "overrides")]
    paths = [common.write_csv(os.path.join(args.out, "allocator.csv"), rows, COLUMNS, stamp),
             common.write_markdown(os.path.join(args.out, "allocator.md"), "glibc malloc: default vs tuned",
                                   [("Setup", setup), ("Results", common.markdown_table(rows, cols))], stamp)]
    if any(r["status"] == "ok" for r in rows):
        path = os.path.join(args.out, "allocator.png")
        plot(rows, path, stamp)
        paths.append(path)
    print(common.markdown_table(rows, cols))
    for path in paths:
        print("wrote", path)
    print(f"total {total:.0f} s")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
