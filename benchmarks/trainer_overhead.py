"""The real trainer's training loop against its compute-only step rate, same model, data and process settings.

Issue #17 item 2 asks that the end-to-end trainer (loader, pipeline, bookkeeping) reach >= 95% of the compute-only
step rate. Per model, on the synthetic Criteo-format dataset (``configs/synthetic/<model>.yaml`` with ``--rows``
generated rows, 39 categorical fields; the config's own embedding optimiser and regulariser) at ``--batch-size``:

* **trainer**: ``python -m dlf_torchrec.train`` for one epoch (``training.num_workers`` as configured, progress bar
  off, no test evaluation); the rate is the ``train_epoch`` event's ``samples_per_s`` of ``metrics.jsonl``: the
  training loop from its first to its last step (DataLoader, ``TrainPipelineSparseDist``, loss read-back, NaN
  check, stop checks), without start-up and the end-of-epoch evaluation;
* **compute-only**: the same config's ``build_training_stack`` in a fresh process, ``pipeline.progress`` cycling
  over ``--num-batches`` batches taken from the same train split and held in memory, timed by
  ``benchmarks/timing.py`` (what ``benchmarks/roofline.py`` calls the step).

The two alternate per model for ``--repeats`` repeats; the medians and their ratio are reported.

    python benchmarks/trainer_overhead.py                         # dnn dcnv2 tf4ctr dlf, 2 repeats, ~15 min
    python benchmarks/trainer_overhead.py --models dnn --rows 20000 --repeats 1 --out /tmp/to   # quick
    python benchmarks/trainer_overhead.py --models dnn tf4ctr --set training.num_workers=0      # in-process loading

Writes ``trainer_overhead.{csv,md}`` to ``--out`` (default ``benchmarks/results/trainer_overhead``), stamped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402

from dlf_torchrec import cli  # noqa: E402

COLUMNS = ("model", "batch_size", "train_rows", "trainer_samples_per_s", "compute_only_samples_per_s",
           "trainer_over_compute_only", "trainer_runs", "compute_only_runs", "status")


def overrides(a: argparse.Namespace, data_dir: str) -> list[str]:
    return [f"dataset.synthetic_rows={a.rows}", f"dataset.output_dir={data_dir}", f"training.batch_size={a.batch_size}",
            "training.epochs=1", "training.progress=false", "training.evaluate_test=false", "dataset.progress=false",
            *a.set]


def config_path(model: str) -> str:
    return os.path.join(common.REPO_ROOT, "configs", "synthetic", f"{model}.yaml")


def run_compute_only(model: str, extra: list[str], num_batches: int, windows: int, seconds: float) -> dict[str, Any]:
    """The step alone on batches of the train split held in memory; {"samples_per_s": [...]}."""
    import itertools

    from dlf_torchrec.distenv import rank_env

    os.environ.update(rank_env(0, 1))
    common.quiet_torchrec()
    from timing import trainer_step_rates

    from dlf_torchrec.config import load_config
    from dlf_torchrec.data.loader import make_dataloader
    from dlf_torchrec.data.meta import DatasetMeta
    from dlf_torchrec.training.allocator import configure_cpu_allocator

    cfg = load_config(config_path(model), extra)
    configure_cpu_allocator(cfg.training.cpu_allocator)
    meta = DatasetMeta.load(cfg.dataset.output_dir)
    loader = make_dataloader(cfg.dataset.output_dir, "train", cfg.training.batch_size, shuffle=True,
                             seed=cfg.training.seed)
    batches = list(itertools.islice(iter(loader), num_batches))
    return {"samples_per_s": trainer_step_rates(cfg, meta.feature_spec, batches, windows, seconds)}


def run_trainer(model: str, extra: list[str], run_dir: str, timeout: float) -> dict[str, Any]:
    """One epoch of the real trainer; {"samples_per_s": [the train_epoch event's rate]} or a status."""
    argv = [sys.executable, "-m", "dlf_torchrec.train", "--config", config_path(model), *extra,
            f"training.output_dir={run_dir}"]
    return common.run_measured([sys.executable, "-c", _PRINT_EPOCH_RATE, run_dir, *argv], timeout, "samples_per_s")


# Runs the trainer (argv[2:]) and prints the train_epoch rate of its metrics.jsonl (argv[1] = its run dir).
_PRINT_EPOCH_RATE = """
import json, os, subprocess, sys
proc = subprocess.run(sys.argv[2:], capture_output=True, text=True)
sys.stderr.write(proc.stderr[-3000:])
if proc.returncode:
    sys.exit(proc.returncode)
events = [json.loads(x) for x in open(os.path.join(sys.argv[1], "metrics.jsonl")) if x.strip()]
print(json.dumps({"samples_per_s": [e["samples_per_s"] for e in events if e["event"] == "train_epoch"]}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = cli.ArgumentParser("trainer_overhead", description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["dnn", "dcnv2", "tf4ctr", "dlf"])
    ap.add_argument("--rows", type=int, default=400_000, help="generated rows (80% train)")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--num-batches", type=int, default=8, help="compute-only: batches held in memory")
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--window-seconds", type=float, default=6.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for both sides, e.g. training.num_workers=0")
    ap.add_argument("--data-dir", default=None, help="preprocessed data (default: a temporary directory)")
    ap.add_argument("--out", default=os.path.join(common.REPO_ROOT, "benchmarks", "results", "trainer_overhead"))
    ap.add_argument("--compute-only-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--overrides", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.compute_only_worker:
        print(json.dumps(run_compute_only(args.compute_only_worker, json.loads(args.overrides), args.num_batches,
                                          args.windows, args.window_seconds)))
        return 0
    return cli.run("trainer_overhead", lambda: _bench(args), args.debug)


def _bench(a: argparse.Namespace) -> int:
    from dlf_torchrec.config import load_config
    from dlf_torchrec.data.meta import DatasetMeta
    from dlf_torchrec.data.preprocess import ensure_preprocessed

    stamp = common.make_stamp()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        data_dir = a.data_dir or os.path.join(work, "data")
        extra = overrides(a, data_dir)
        ensure_preprocessed(load_config(config_path(a.models[0]), extra).dataset)  # every model: the same data
        train_rows = DatasetMeta.load(data_dir).splits["train"].rows
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for rep in range(a.repeats):
            for model in a.models:
                compute = [sys.executable, os.path.abspath(__file__), "--compute-only-worker", model,
                           "--overrides", json.dumps(extra), "--num-batches", str(a.num_batches),
                           "--windows", str(a.windows), "--window-seconds", str(a.window_seconds)]
                sides = [("trainer", None), ("compute_only", compute)]
                for side, argv in sides if rep % 2 == 0 else sides[::-1]:
                    res = (run_trainer(model, extra, os.path.join(work, f"run_{model}_{rep}"), a.timeout)
                           if argv is None else common.run_measured(argv, a.timeout, "samples_per_s"))
                    results.setdefault((model, side), []).append(res)
                    rate = (f"{statistics.median(res['samples_per_s']):,.0f} samples/s" if res["status"] == "ok"
                            else res["status"])
                    print(f"  repeat {rep} {model} {side}: {rate}", flush=True)
        for model in a.models:
            row: dict[str, Any] = {"model": model, "batch_size": a.batch_size, "train_rows": train_rows}
            rates = {}
            for side in ("trainer", "compute_only"):
                ok = [statistics.median(r["samples_per_s"]) for r in results[(model, side)] if r["status"] == "ok"]
                if ok:
                    rates[side] = statistics.median(ok)
                    row[f"{side}_samples_per_s"] = round(rates[side])
                    row[f"{side}_runs"] = " / ".join(f"{x:,.0f}" for x in ok)
            if len(rates) == 2:
                row.update(trainer_over_compute_only=round(rates["trainer"] / rates["compute_only"], 3), status="ok")
            else:
                row["status"] = "; ".join(r["status"] for k, v in results.items() if k[0] == model for r in v
                                          if r["status"] != "ok")
            rows.append(row)
    setup = (f"{a.rows:,} generated rows (train split {train_rows:,}), batch {a.batch_size}, "
             f"{a.repeats} alternating repeats; compute-only: {a.num_batches} train batches cycled, "
             f"{a.windows} windows x {a.window_seconds:g} s; trainer: one epoch, its train_epoch rate.")
    common.write_report(a.out, "trainer_overhead", "Trainer loop vs compute-only step", __doc__ or "", setup, rows,
                        COLUMNS, stamp, "benchmarks/trainer_overhead.py")
    print(common.markdown_table(rows, COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
