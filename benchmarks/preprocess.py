"""Preprocessing throughput and peak memory: the preprocessing CLI end to end on generated Criteo TSV files.

For each size in ``--rows`` a Criteo-format TSV is generated once with
:func:`dlf_torchrec.data.synthetic.generate_criteo_tsv` (not timed; cached under ``--cache-dir``) and preprocessed by
what users run::

    python -m dlf_torchrec.data.preprocess --config configs/criteo/dcnv2.yaml --force \
        dataset.train=<file.tsv> dataset.output_dir=<tmp> dataset.progress=true

(Criteo protocol of that config: random 8:1:1 split, ``min_count`` 10, I1..I13 bucketised, bad rows skipped; the
worker count is the library's automatic choice unless ``--workers`` is given.)

Measured per size:

* ``rows_per_s``: input rows / wall time of the CLI subprocess, end to end (interpreter start and imports included);
* ``rows_per_s_lib``: the rate the library itself reports (``[preprocess] ... read N rows in T s``, both passes,
  vocabularies and writes, without interpreter start-up);
* ``peak_rss_mib``: peak RSS of the preprocessing, worker processes included: the CLI runs under a tiny wrapper
  process that reports :func:`common.children_peak_rss_mib` (``RUSAGE_CHILDREN`` ``ru_maxrss``: the largest peak
  of any single process of the CLI's tree, i.e. the CLI process or one worker, not the sum over concurrent workers).

Each size gets a fresh wrapper, so one size's peak cannot leak into the next. Outputs in ``--out`` (default
``benchmarks/results``): ``preprocess.csv``, ``preprocess.md`` and ``preprocess.png`` (rows/s and peak RSS vs rows).
The growth of peak RSS from 1M to 5M rows (or between the two largest sizes run) is printed and written to the
Markdown. Targets (to be judged on a quiet machine): >= 250,000 rows/s end to end on 2 cores; peak RSS growth < 25%
from 1M to 5M rows.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402

from dlf_torchrec import cli  # noqa: E402

DEFAULT_ROWS = (100_000, 1_000_000, 5_000_000)
QUICK_ROWS = (20_000, 100_000)
CONFIG = "configs/criteo/dcnv2.yaml"
COLUMNS = ("rows", "input_mib", "workers", "wall_s", "rows_per_s", "lib_elapsed_s", "rows_per_s_lib",
           "peak_rss_mib", "output_mib", "status")
TARGET_ROWS_PER_S = 250_000
TARGET_RSS_GROWTH = 0.25
_LIB_RATE = re.compile(r"read ([\d,]+) rows in ([\d.]+)s")


def input_file(rows: int, seed: int, cache_dir: str) -> str:
    """The generated Criteo TSV of ``rows`` rows (generated once, then reused)."""
    path = os.path.join(cache_dir, f"criteo_synthetic_{rows}_seed{seed}.tsv")
    if not os.path.exists(path):
        from dlf_torchrec.data.synthetic import generate_criteo_tsv

        t0 = time.perf_counter()
        generate_criteo_tsv(path, rows, seed)  # atomic: a path that exists is complete
        print(f"  generated {path} in {time.perf_counter() - t0:.0f} s (not timed)", flush=True)
    return path


def _dir_mib(path: str) -> float:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 2**20


def measure(rows: int, path: str, workers: int | None, work_dir: str, timeout: float) -> dict[str, Any]:
    """Preprocess ``path`` with the CLI under the measuring wrapper; one result row."""
    out_dir = os.path.join(work_dir, f"out_{rows}")
    shutil.rmtree(out_dir, ignore_errors=True)
    # progress=true: the library then prints its summary line with its own rate (bars go to stderr, captured).
    cli = [sys.executable, "-m", "dlf_torchrec.data.preprocess", "--config", CONFIG, "--force",
           f"dataset.train={path}", f"dataset.output_dir={out_dir}", "dataset.progress=true"]
    if workers is not None:
        cli[4:4] = ["--workers", str(workers)]
    row: dict[str, Any] = {"rows": rows, "input_mib": os.path.getsize(path) / 2**20,
                           "workers": "auto" if workers is None else workers}
    res = common.run_measured(cli, timeout, "wall_s")
    if "wall_s" not in res:  # timed out, or the wrapper itself failed
        return {**row, "status": res["status"]}
    row.update(wall_s=res["wall_s"], rows_per_s=rows / res["wall_s"], peak_rss_mib=res["peak_rss_mib"])
    match = _LIB_RATE.search(res["stderr"])
    if match:
        lib_rows, lib_s = int(match.group(1).replace(",", "")), float(match.group(2))
        row.update(lib_elapsed_s=lib_s, rows_per_s_lib=lib_rows / max(lib_s, 1e-9))
    row["output_mib"] = _dir_mib(out_dir) if os.path.isdir(out_dir) else None
    row["status"] = res["status"]
    shutil.rmtree(out_dir, ignore_errors=True)
    return row


def rss_growth(rows: list[dict[str, Any]]) -> tuple[int, int, float] | None:
    """(from rows, to rows, relative growth of peak RSS): 1M -> 5M when both ran, else the two largest sizes."""
    ok = {r["rows"]: r["peak_rss_mib"] for r in rows if r.get("status") == "ok" and r.get("peak_rss_mib")}
    if 1_000_000 in ok and 5_000_000 in ok:
        a, b = 1_000_000, 5_000_000
    elif len(ok) >= 2:
        a, b = sorted(ok)[-2:]
    else:
        return None
    return a, b, ok[b] / ok[a] - 1.0


def plot(rows: list[dict[str, Any]], path: str, stamp: dict[str, str]) -> None:
    """Two panels: rows/s (end to end and library) and peak RSS, against input rows (log x)."""
    fig, (ax1, ax2) = common.new_figure(11.0, 4.6, ncols=2)
    ok = sorted((r for r in rows if r.get("status") == "ok"), key=lambda r: r["rows"])
    xs = [r["rows"] for r in ok]
    ax1.plot(xs, [r["rows_per_s"] for r in ok], marker="o", label="end to end (CLI wall time)")
    lib = [(r["rows"], r["rows_per_s_lib"]) for r in ok if r.get("rows_per_s_lib")]
    if lib:
        ax1.plot([p[0] for p in lib], [p[1] for p in lib], marker="s", linestyle="--",
                 label="library-reported (no interpreter start)")
    ax1.axhline(TARGET_ROWS_PER_S, color="grey", linestyle=":", label=f"target {TARGET_ROWS_PER_S:,} rows/s")
    ax1.set_ylabel("rows/s")
    ax2.plot(xs, [r["peak_rss_mib"] for r in ok], marker="o", color="tab:red")
    ax2.set_ylabel("peak RSS, MiB (largest process of the CLI's tree)")
    for ax, title in ((ax1, "Preprocessing throughput"), (ax2, "Peak RSS")):
        ax.set_xscale("log")
        ax.set_xlabel("input rows (generated Criteo TSV)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    common.save_figure(fig, path, stamp)


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace, stamp: dict[str, str]) -> list[str]:
    out = args.out
    paths = [common.write_csv(os.path.join(out, "preprocess.csv"), rows, COLUMNS, stamp)]
    growth = rss_growth(rows)
    growth_line = (f"peak RSS growth {growth[0]:,} -> {growth[1]:,} rows: {growth[2] * 100:+.1f}% "
                   f"(target < {TARGET_RSS_GROWTH * 100:.0f}% from 1M to 5M rows)" if growth else
                   "peak RSS growth: needs two sizes")
    best = max((r["rows_per_s"] for r in rows if r.get("rows_per_s")), default=None)
    setup = "\n".join([
        f"- input: Criteo-format TSV from `generate_criteo_tsv(path, rows, seed={args.seed})` (generation not "
        f"timed), cached in `{args.cache_dir}`",
        f"- command per size: `python -m dlf_torchrec.data.preprocess --config {CONFIG} --force "
        "dataset.train=<tsv> dataset.output_dir=<tmp> dataset.progress=true`"
        + (f" `--workers {args.workers}`" if args.workers is not None else " (workers: automatic)"),
        "- rows_per_s: rows / CLI wall time (end to end, interpreter start and imports included); rows_per_s_lib: "
        "the library's own report (both passes, vocabularies, writes)",
        "- peak_rss_mib: `RUSAGE_CHILDREN` ru_maxrss of a fresh wrapper per size = the largest peak of any one "
        "process of the CLI's tree (the CLI or a worker), not a sum over concurrent workers",
        f"- {growth_line}",
        f"- best end-to-end rate: {best:,.0f} rows/s (target >= {TARGET_ROWS_PER_S:,} rows/s on 2 cores, judged on a"
        " quiet machine)" if best else "- no successful size",
        f"- load average at start: {stamp.get('load_average_at_start')} (timings are only comparable when quiet)",
    ])
    sections = [("Setup", setup), ("Results", common.markdown_table(rows, COLUMNS)),
                ("Command", f"```bash\n{stamp['command']}\n```")]
    paths.append(common.write_markdown(os.path.join(out, "preprocess.md"), "Preprocessing throughput and peak RSS"
                                       + (" (--quick smoke run)" if args.quick else ""), sections, stamp))
    if any(r.get("status") == "ok" for r in rows):
        paths.append(os.path.join(out, "preprocess.png"))
        plot(rows, paths[-1], stamp)
    print(growth_line)
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser("benchmarks/preprocess", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"smoke run (< 1 min): rows {' '.join(map(str, QUICK_ROWS))}")
    p.add_argument("--rows", nargs="+", type=int, default=None,
                   help=f"input sizes (default {' '.join(map(str, DEFAULT_ROWS))})")
    p.add_argument("--workers", type=int, default=None, help="--workers for the CLI (default: its automatic choice)")
    p.add_argument("--seed", type=int, default=7, help="generator seed of the input files")
    p.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "dlf_preprocess_bench"),
                   help="where generated inputs are kept between runs")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per size")
    p.add_argument("--out", default=common.DEFAULT_RESULTS_DIR, help="results directory")
    args = p.parse_args(argv)
    args.rows = sorted(args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run("benchmarks/preprocess", lambda: _benchmark(args, argv), args.debug)


def _benchmark(args: argparse.Namespace, argv: list[str] | None) -> int:
    stamp = common.make_stamp([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    results: list[dict[str, Any]] = []
    work_dir = tempfile.mkdtemp(prefix="dlf_preprocess_bench_out_")
    try:
        for rows in args.rows:
            print(f"{rows:,} rows ...", flush=True)
            path = input_file(rows, args.seed, args.cache_dir)
            row = measure(rows, path, args.workers, work_dir, args.timeout)
            results.append(row)
            print(f"  {row.get('status')}: {row.get('rows_per_s', 0):,.0f} rows/s end to end, "
                  f"{row.get('rows_per_s_lib') or 0:,.0f} rows/s library, peak RSS "
                  f"{row.get('peak_rss_mib') or 0:.0f} MiB", flush=True)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    for path in write_results(results, args, stamp):
        print("wrote", path)
    return 0 if all(r.get("status") == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
