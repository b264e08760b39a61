"""Scoring speed and peak memory: ``python -m dlf_torchrec.predict`` on generated Criteo-format files, this tree's
implementation against an older commit's, in the same run.

The model is the default experiment's DCNv2 (``configs/synthetic/dcnv2.yaml``: d 8, 39 fields, 3 full-rank cross
layers, deep [400, 400, 400] with BatchNorm) on a dataset preprocessed from a generated Criteo TSV
(:func:`dlf_torchrec.data.synthetic.generate_criteo_tsv`, ``--train-rows`` rows); its weights are random (scoring
speed does not depend on them), written as the trainer's checkpoint layout (:func:`make_run`). For each size in
``--rows`` a second generated TSV (another seed) is scored labelled (40 columns) and unlabelled (39, as Criteo's
``test.txt``), each by ``predict_file`` with the CLI's defaults (batch 8192, ``--bad-rows skip``) in a fresh
process per measurement: ``new`` imports this tree, ``old`` the tree of ``--old-commit`` (extracted by ``git
archive``; default: the last commit before the vectorised scoring path). Measured per row: ``rows_per_s`` = rows /
(load the run + read, parse, featurise, forward, write all rows), interpreter start and imports excluded;
``wall_s`` the whole process; ``peak_rss_mib`` its peak RSS (``VmHWM``). ``forward_rows_per_s`` is the model's
forward alone on already encoded batches of the same size (the ceiling for scoring on this machine), measured
once per run, and ``of_forward`` the share of it that scoring reaches. The ``old`` implementation is run only at
the sizes in ``--old-rows`` (it parses unlabelled rows one by one).

Outputs in ``--out`` (default ``benchmarks/results/predict_speed``): ``predict_speed.csv`` and
``predict_speed.md``, stamped (the load average at the start is in the stamp; the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402

from dlf_torchrec import cli  # noqa: E402

CONFIG = "configs/synthetic/dcnv2.yaml"
OLD_COMMIT = "d829555"  # main before the vectorised scoring path (fast-predict)
DEFAULT_ROWS = (100_000, 1_000_000)
QUICK_ROWS = (20_000,)
BATCH = 8192
COLUMNS = ("impl", "input", "rows", "rows_per_s", "score_s", "wall_s", "peak_rss_mib", "forward_rows_per_s",
           "of_forward", "load_avg_1m", "status")

# One measurement: the predict module of the tree on sys.path[0] scores one file; prints a JSON line.
_DRIVER = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from dlf_torchrec import predict
opts = predict.PredictOptions(bad_rows="skip", progress=False, batch_size=int(sys.argv[5]))
t0 = time.perf_counter()
result = predict.predict_file(sys.argv[2], sys.argv[3], sys.argv[4], opts)
seconds = time.perf_counter() - t0
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"rows": result[0], "bad": result[1], "score_s": seconds, "peak_rss_mib": peak}))
"""


def make_run(workdir: str, train_tsv: str, overrides: list[str] | tuple[str, ...] = (), seed: int = 0) -> str:
    """A scoring-ready run directory under ``workdir`` without training: ``train_tsv`` (Criteo format) preprocessed
    with :data:`CONFIG` (+ ``overrides``), the model's weights drawn at random (embeddings N(0, 0.5²), BatchNorm
    statistics perturbed, so that scores vary from row to row) and saved as the trainer's ``checkpoints/best``;
    returns the run directory."""
    import torch
    import torch.distributed.checkpoint as dcp

    from dlf_torchrec import io
    from dlf_torchrec.config import load_config
    from dlf_torchrec.data.meta import DatasetMeta
    from dlf_torchrec.data.preprocess import preprocess
    from dlf_torchrec.run import build_unsharded
    from dlf_torchrec.training.checkpoint import STATE_FILE

    run_dir = os.path.join(workdir, "run")
    cfg = load_config(os.path.join(common.REPO_ROOT, CONFIG), [
        "dataset.format=criteo", f"dataset.train={train_tsv}", f"dataset.output_dir={workdir}/data",
        f"training.output_dir={run_dir}", "dataset.progress=false", *overrides])
    preprocess(cfg.dataset, workers=1)
    model = build_unsharded(cfg, DatasetMeta.load(cfg.dataset.output_dir).feature_spec).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embedding" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
    best = os.path.join(run_dir, "checkpoints", "best")
    dcp.save({"model": model.state_dict()}, checkpoint_id=best, no_dist=True)
    io.write_json(os.path.join(best, STATE_FILE), {"note": "random weights (benchmarks/predict_speed.py)"})
    io.write_yaml(os.path.join(run_dir, "config.yaml"), cfg.to_dict())
    return run_dir


def scoring_inputs(rows: int, seed: int, cache_dir: str) -> dict[str, str]:
    """{"labelled": generated Criteo TSV of ``rows`` rows, "unlabelled": the same without its label column}
    (generated once, then reused)."""
    from dlf_torchrec.data.synthetic import generate_criteo_tsv

    labelled = os.path.join(cache_dir, f"criteo_synthetic_{rows}_seed{seed}.tsv")
    unlabelled = labelled.replace(".tsv", "_unlabelled.tsv")
    if not os.path.exists(labelled):
        generate_criteo_tsv(labelled, rows, seed)
    if not os.path.exists(unlabelled):
        with open(labelled, "rb") as src, open(unlabelled + ".tmp", "wb") as dst:
            for line in src:
                dst.write(line[line.index(b"\t") + 1:])
        os.replace(unlabelled + ".tmp", unlabelled)
    return {"labelled": labelled, "unlabelled": unlabelled}


def old_tree(commit: str, workdir: str) -> str:
    """The ``dlf_torchrec`` package of ``commit``, extracted under ``workdir``; returns the directory to import from."""
    out = os.path.join(workdir, f"old_{commit}")
    os.makedirs(out, exist_ok=True)
    archive = subprocess.run(["git", "archive", commit, "dlf_torchrec"], cwd=common.REPO_ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", out], input=archive, check=True)
    return out


def measure(tree: str, run_dir: str, path: str, out: str, batch: int) -> dict[str, Any]:
    """Score ``path`` with the predict module of ``tree`` in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _DRIVER, tree, run_dir, path, out, str(batch)],
                          capture_output=True, text=True, cwd=common.REPO_ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"status": f"failed: {proc.stderr.strip().splitlines()[-1:]}", "wall_s": wall}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(wall_s=wall, rows_per_s=result["rows"] / result["score_s"], status="ok")
    return result


def forward_rate(run_dir: str, batch: int, seconds: float = 5.0) -> float:
    """Rows/s of the run's model forward alone (:func:`dlf_torchrec.predict.predict_proba`) on one encoded batch of
    random ids, repeated for about ``seconds``."""
    import numpy as np

    from dlf_torchrec.predict import predict_proba
    from dlf_torchrec.run import load_model, load_run

    run = load_run(run_dir)
    model = load_model(run)
    rng = np.random.default_rng(0)
    sparse = np.stack([rng.integers(1, f.vocab_size, batch) for f in run.meta.categorical], 1)
    dense = np.zeros((batch, len(run.meta.dense)), dtype=np.float32)
    predict_proba(model, run.meta.feature_spec, dense, sparse)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        predict_proba(model, run.meta.feature_spec, dense, sparse)
        n += batch
    return n / (time.perf_counter() - t0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser("benchmarks/predict_speed", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=None, help=f"input sizes (default {DEFAULT_ROWS})")
    p.add_argument("--old-rows", type=int, nargs="*", default=None,
                   help="sizes the old implementation also scores (default: the smallest of --rows)")
    p.add_argument("--old-commit", default=OLD_COMMIT, help="commit of the old implementation ('' = none)")
    p.add_argument("--train-rows", type=int, default=20_000, help="rows of the generated training TSV")
    p.add_argument("--batch-size", type=int, default=BATCH)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of every measurement (OMP_NUM_THREADS; default: torch's own choice)")
    p.add_argument("--quick", action="store_true", help=f"sizes {QUICK_ROWS}, no old implementation (smoke test)")
    p.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "dlf_predict_speed"),
                   help="generated inputs are kept here between runs")
    p.add_argument("--out", default=os.path.join(common.DEFAULT_RESULTS_DIR, "predict_speed"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run("benchmarks/predict_speed", lambda: _benchmark(args, argv), args.debug)


def _benchmark(args: argparse.Namespace, argv: list[str] | None) -> int:
    stamp = common.make_stamp(None if argv is None else ["benchmarks/predict_speed.py", *argv])
    if args.threads is not None:  # inherited by the measurement processes
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    sizes = list(args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS))
    old_sizes = set([] if args.quick or not args.old_commit else
                    (args.old_rows if args.old_rows is not None else [min(sizes)]))
    os.makedirs(args.cache_dir, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="predict_speed_") as work:
        from dlf_torchrec.data.synthetic import generate_criteo_tsv

        train = generate_criteo_tsv(os.path.join(work, "train.tsv"), args.train_rows, 7)
        run_dir = make_run(work, train)
        forward = forward_rate(run_dir, args.batch_size)
        print(f"model forward alone: {forward:,.0f} rows/s at batch {args.batch_size}", flush=True)
        trees = [("new", common.REPO_ROOT)]
        if old_sizes:
            trees.append(("old", old_tree(args.old_commit, work)))
        for n in sizes:
            for kind, path in scoring_inputs(n, 11, args.cache_dir).items():
                for impl, tree in trees:
                    if impl == "old" and n not in old_sizes:
                        continue
                    out = os.path.join(work, f"{impl}_{kind}_{n}.pred")
                    r = measure(tree, run_dir, path, out, args.batch_size)
                    r.update(impl=impl if impl == "new" else f"old ({args.old_commit})", input=kind,
                             rows=r.get("rows", n), forward_rows_per_s=forward,
                             of_forward=r.get("rows_per_s", float("nan")) / forward,
                             load_avg_1m=os.getloadavg()[0])
                    rows.append(r)
                    print(f"  {r['impl']:>14} {kind:>10} {n:>9,} rows: {r.get('rows_per_s', 0):>9,.0f} rows/s, "
                          f"peak RSS {r.get('peak_rss_mib', 0):,.0f} MiB, wall {r['wall_s']:.1f} s [{r['status']}]",
                          flush=True)
                if len(trees) > 1 and n in old_sizes:
                    new, old = (os.path.join(work, f"{i}_{kind}_{n}.pred") for i in ("new", "old"))
                    rows[-1]["status"] += f"; max |new - old| {max_abs_diff(new, old):.2g}"
    common.write_table(args.out, "predict_speed", "Scoring speed: predict, new vs old", __doc__, rows, COLUMNS,
                       stamp)
    print(common.markdown_table(rows, COLUMNS))
    return 0


def max_abs_diff(a: str, b: str) -> float:
    """Largest absolute difference between two predict outputs (``nan`` rows must coincide)."""
    import numpy as np

    x, y = np.loadtxt(a), np.loadtxt(b)
    if x.shape != y.shape or not np.array_equal(np.isnan(x), np.isnan(y)):
        return float("inf")
    return float(np.nanmax(np.abs(x - y))) if len(x) else 0.0


if __name__ == "__main__":
    sys.exit(main())
