"""Our Criteo parser against two well-kept readers (pyarrow's CSV reader, polars) on the same file, all cores.

Issue #17 item 5 asks whether a well-kept reader (pyarrow's CSV reader, polars) would make preprocessing faster
than our parser. Each reader does the same jobs on the same generated Criteo TSV (``benchmarks/preprocess.py``'s
generator and cache) with every core in use: ``parse`` (the file to typed columns in memory: label, I1..I13 as
integers, C1..C26 as categorical tokens) and ``parse+encode`` (the same plus a dictionary encoding of each
categorical column, its distinct tokens and each row's index into them: the first step of building vocabularies);
``preprocess`` (ours only) is our whole CLI (both passes, content-hash split, vocabularies, bad-row accounting,
writes), the rate the issue's target (>= 1M rows/s) is about.

How each reader runs:

* **ours**: byte ranges of the file (``reading.file_chunks``) parsed by ``parse.parse_chunk`` in a fork pool of one
  process per core, exactly as the preprocessor's pass 1 does; ``parse+encode`` adds ``features.distinct`` per
  categorical field. Workers return only row counts (the preprocessor keeps the columns in the worker too).
* **pyarrow** ``pyarrow.csv.read_csv`` (its thread pool: one thread per core) with the 40 column types given, then
  ``pyarrow.compute.dictionary_encode`` per categorical column.
* **polars** ``polars.read_csv`` (its thread pool) with the column types given, then a cast to ``Categorical``.

pyarrow and polars run in their own virtualenv (``--venv``, created on first use with the pins below), so nothing
is added to the product's requirements; our reader runs in the interpreter that runs this script. Each measurement
is a fresh process under a wrapper that reports its wall time (imports excluded: the reader times itself) and the
peak RSS of its process tree (``RUSAGE_CHILDREN``: the largest single process). Readers alternate within each
repeat; the median of ``--repeats`` is reported. The peers read the whole file into memory (their fastest mode),
so their RSS grows with the input; ours streams.

    python benchmarks/readers.py                     # 5M rows, 3 repeats
    python benchmarks/readers.py --rows 200000 --repeats 1 --out /tmp/readers   # quick

Writes ``readers.{csv,md,png}`` to ``--out`` (default ``benchmarks/results/readers``), stamped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
import preprocess as preprocess_bench  # noqa: E402

from dlf_torchrec import cli  # noqa: E402

PEER_PINS = ("pyarrow==26.0.1", "polars==2.1.0", "numpy")
DEFAULT_VENV = os.path.join(os.path.expanduser("~"), ".cache", "dlf_torchrec", "readers-venv")
READERS = ("ours", "pyarrow", "polars")
TASKS = ("parse", "parse+encode")
COLUMNS = ("reader", "task", "rows", "runs", "seconds_median", "rows_per_s", "rows_per_s_runs", "vs_ours",
           "peak_rss_mib", "status")
NAMES = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]

# Run by the readers' venv python: argv = reader task path; prints one JSON line {"rows", "seconds"}.
_PEER = r"""
import json, os, sys, time
reader, task, path = sys.argv[1:4]
names = json.loads(sys.argv[4])
ints, cats = names[:14], names[14:]
if reader == "pyarrow":
    import pyarrow as pa, pyarrow.csv as pacsv, pyarrow.compute as pc
    t0 = time.perf_counter()
    table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=names),
                           parse_options=pacsv.ParseOptions(delimiter="\t"),
                           convert_options=pacsv.ConvertOptions(
                               column_types={**{n: pa.int64() for n in ints}, **{n: pa.string() for n in cats}}))
    if task == "parse+encode":
        encoded = [pc.dictionary_encode(table[n]) for n in cats]
    rows = table.num_rows
else:
    import polars as pl
    t0 = time.perf_counter()
    df = pl.read_csv(path, separator="\t", has_header=False, new_columns=names,
                     schema_overrides={**{n: pl.Int64 for n in ints}, **{n: pl.Utf8 for n in cats}})
    if task == "parse+encode":
        encoded = df.select([pl.col(n).cast(pl.Categorical) for n in cats])
    rows = df.height
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - t0}))
"""



# ------------------------------------------------------------------------------------------ our reader


def _ours_job(job: Any) -> int:
    from dlf_torchrec.data.features import distinct
    from dlf_torchrec.data.parse import parse_chunk

    schema, encode = _OURS["schema"], _OURS["encode"]
    pc = parse_chunk(schema, job.read()[0])
    if encode:
        for keys in pc.categorical:
            distinct(keys)
    return len(pc.ok_idx)


_OURS: dict[str, Any] = {}


def run_ours(task: str, path: str, workers: int, chunk_rows: int) -> dict[str, float]:
    """Parse (and encode) ``path`` as the preprocessor's pass 1 does; {"rows", "seconds"}."""
    import multiprocessing

    from dlf_torchrec.config import load_config
    from dlf_torchrec.data.reading import file_chunks, file_schema
    from dlf_torchrec.data.sidetables import dataset_schema

    cfg = load_config(preprocess_bench.CONFIG, [f"dataset.train={path}"], validate_model=False).dataset
    t0 = time.perf_counter()
    _OURS.update(schema=file_schema(path, dataset_schema(cfg)), encode=task == "parse+encode")
    jobs = file_chunks(path, 0, _OURS["schema"], chunk_rows)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        rows = sum(pool.imap(_ours_job, jobs))
    return {"rows": rows, "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------------ driver


def ensure_venv(venv: str) -> str:
    """The readers' venv python; created on first use (marker file ``.installed``)."""
    py = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, ".installed")
    if not os.path.exists(marker):
        print(f"creating the readers' venv in {venv} (one-off): {' '.join(PEER_PINS)}", flush=True)
        subprocess.run(["python3.11", "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "--quiet", *PEER_PINS], check=True)
        with open(marker, "w") as f:
            f.write(" ".join(PEER_PINS) + "\n")
    return py


def venv_versions(py: str) -> dict[str, str]:
    code = "import pyarrow, polars, numpy; print(pyarrow.__version__, polars.__version__, numpy.__version__)"
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return dict(zip(("pyarrow", "polars", "numpy"), out, strict=True))


def reader_argv(reader: str, task: str, path: str, peer_py: str, workers: int, chunk_rows: int) -> list[str]:
    if reader == "ours":
        return [sys.executable, os.path.abspath(__file__), "--ours-worker", task, "--input", path,
                "--workers", str(workers), "--chunk-rows", str(chunk_rows)]
    return [peer_py, "-c", _PEER, reader, task, path, json.dumps(NAMES)]


def preprocess_argv(path: str, out_dir: str) -> list[str]:
    return [sys.executable, "-c", "import json, re, subprocess, sys, time\n"
            "t = time.perf_counter()\n"
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "sys.stderr.write(p.stderr[-2000:])\n"
            "sys.exit(p.returncode) if p.returncode else None\n"
            "m = re.search(r'read ([\\d,]+) rows in ([\\d.]+)s', p.stderr)\n"
            "print(json.dumps({'rows': int(m.group(1).replace(',', '')), 'seconds': float(m.group(2)),"
            " 'wall_s': time.perf_counter() - t}))",
            sys.executable, "-m", "dlf_torchrec.data.preprocess", "--config", preprocess_bench.CONFIG, "--force",
            f"dataset.train={path}", f"dataset.output_dir={out_dir}", "dataset.progress=true"]


def summarise(results: dict[tuple[str, str], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for (reader, task), runs in results.items():
        ok = [r for r in runs if r.get("status") == "ok"]
        row: dict[str, Any] = {"reader": reader, "task": task, "runs": len(ok)}
        if not ok:
            row["status"] = runs[-1].get("status", "error")
            rows.append(row)
            continue
        secs = statistics.median(r["seconds"] for r in ok)
        row.update(rows=ok[0]["rows"], seconds_median=secs, rows_per_s=ok[0]["rows"] / secs,
                   rows_per_s_runs=" / ".join(f"{r['rows'] / r['seconds']:,.0f}" for r in ok),
                   peak_rss_mib=max(r["peak_rss_mib"] for r in ok), status="ok")
        rows.append(row)
    ours = {r["task"]: r.get("rows_per_s") for r in rows if r["reader"] == "ours"}
    for r in rows:
        if r.get("rows_per_s") and ours.get(r["task"]):
            r["vs_ours"] = r["rows_per_s"] / ours[r["task"]]
    return rows


def plot(rows: list[dict[str, Any]], path: str, stamp: dict[str, str]) -> None:
    fig, (ax1, ax2) = common.new_figure(11.0, 4.6, ncols=2)
    ok = [r for r in rows if r.get("status") == "ok"]
    labels = [f"{r['reader']}\n{r['task']}" for r in ok]
    ax1.bar(labels, [r["rows_per_s"] / 1e3 for r in ok], color="tab:blue")
    ax1.axhline(1000, color="tab:red", linestyle="--", label="issue #17 target for preprocess (1M rows/s)")
    ax1.set_ylabel("thousand rows/s (median)")
    ax1.legend(fontsize=8)
    ax1.tick_params(axis="x", labelsize=7)
    ax2.bar(labels, [r["peak_rss_mib"] for r in ok], color="tab:orange")
    ax2.set_ylabel("peak RSS, MiB (largest process)")
    ax2.tick_params(axis="x", labelsize=7)
    common.save_figure(fig, path, stamp)


def main(argv: list[str] | None = None) -> int:
    ap = cli.ArgumentParser("readers", description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="our reader's processes")
    ap.add_argument("--chunk-rows", type=int, default=None, help="our chunk size (default: the config's)")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "dlf_preprocess_bench"))
    ap.add_argument("--venv", default=DEFAULT_VENV, help="pyarrow + polars venv, created on first use")
    ap.add_argument("--out", default=os.path.join(common.REPO_ROOT, "benchmarks", "results", "readers"))
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--ours-worker", choices=TASKS, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--input", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ours_worker:
        print(json.dumps(run_ours(args.ours_worker, args.input, args.workers, args.chunk_rows)))
        return 0
    return cli.run("readers", lambda: _bench(args), args.debug)


def _bench(args: argparse.Namespace) -> int:
    if args.chunk_rows is None:
        from dlf_torchrec.config import load_config

        args.chunk_rows = load_config(preprocess_bench.CONFIG, [], validate_model=False).dataset.chunk_rows
    stamp = common.make_stamp()
    peer_py = ensure_venv(args.venv)
    stamp.update({f"venv_{k}": v for k, v in venv_versions(peer_py).items()})
    os.makedirs(args.cache_dir, exist_ok=True)
    path = preprocess_bench.input_file(args.rows, args.seed, args.cache_dir)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as work:
        for rep in range(args.repeats):
            for task in TASKS:
                for reader in READERS:
                    res = common.run_measured(reader_argv(reader, task, path, peer_py, args.workers,
                                                          args.chunk_rows), args.timeout, "seconds")
                    results.setdefault((reader, task), []).append(res)
                    rate = f"{res['rows'] / res['seconds']:,.0f} rows/s" if res["status"] == "ok" else res["status"]
                    print(f"  repeat {rep} {reader:8s} {task:13s} {rate}", flush=True)
            res = common.run_measured(preprocess_argv(path, os.path.join(work, "out")), args.timeout, "seconds")
            results.setdefault(("ours", "preprocess"), []).append(res)
            rate = f"{res['rows'] / res['seconds']:,.0f} rows/s" if res["status"] == "ok" else res["status"]
            print(f"  repeat {rep} ours     preprocess    {rate}", flush=True)
    rows = summarise(results)
    doc = (f"Input: {args.rows:,} generated Criteo rows ({os.path.getsize(path) / 2**20:,.0f} MiB), "
           f"{os.cpu_count()} cores; median of {args.repeats} alternating repeats; `seconds` excludes interpreter "
           "start and imports; `vs_ours`: the reader's rate over ours on the same task. `preprocess` is our whole "
           "CLI (the library's own rate: both passes, split, vocabularies, writes).")
    common.write_report(args.out, "readers", "Criteo parsing: our parser vs pyarrow and polars", __doc__ or "", doc,
                        rows, COLUMNS, stamp, "benchmarks/readers.py")
    plot(rows, os.path.join(args.out, "readers.png"), stamp)
    print(common.markdown_table(rows, COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
