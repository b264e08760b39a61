"""Model quality: the trainer CLI over configs x seeds, mean ± std of valid/test AUC and logloss, published beside.

Each row of a suite is ``(label, dataset, config file, overrides)``; each row runs once per seed as a subprocess::

    python -m dlf_torchrec.train --config <config> <overrides> training.seed=<seed> \
        training.epochs=min(<configured>, <cap>) training.output_dir=<work-dir>/<label>/seed<seed>

Everything else (dataset, split files / ``dataset.split_seed``, batch size, optimiser, early stopping) stays as the
config has it, so every row of a suite follows the configs' protocol (Frappe: configs/frappe/base.yaml, the BARS
protocol: early stop patience 2 on valid AUC) under the same epoch cap. Per run, ``results.json`` (best
checkpoint's valid and, where the config has a test split, test metrics) and the median ``samples_per_s`` of the
``train_epoch`` events of ``metrics.jsonl`` are collected; per row the mean ± std (sample std, n - 1)
over seeds is reported.

Suites (``--suite``):

* ``models``: dnn, dcnv2, dlf, tf4ctr on Frappe, the Criteo head sample and the Avazu head sample (no Avazu tf4ctr
  config exists: that row is skipped and listed as such).
* ``dlf``: Frappe; DCNv2, DNN, DLF ``form: authors`` and ``form: paper``, each form full + w/o gate, w/o RLI,
  w/o NAF, w/o RLI+NAF. "Full" for the authors' form is ``naf: true`` (the authors' default model has no attention).
* ``tf4ctr``: Frappe; DualMLP BCE, DualMLP Twin Focus, TF4CTR SER+WSF, TF4CTR with DLF (authors' form) as the complex
  encoder, DCNv2 for reference.

Throughput column (``dlf`` and ``tf4ctr`` suites): forward + backward + optimiser samples/s at batch 4096 of each
row's exact model config, measured in ``quality_throughput.py`` (the throughput benchmark's timing loop,
``timing.time_steps``) on
the row's dataset feature spec (real Frappe cardinalities) with uniform random ids: TorchRec ``shard_model`` forced to
``table_wise``, fused rowwise Adagrad + Adam, ``TrainPipelineSparseDist``, 1 process, glibc malloc tuned as the
trainer does by default (``training.cpu_allocator``). ``benchmarks/throughput.py``
cannot do this: it builds every model with its default config, so DLF forms and ablations would all look alike.

Outputs in ``--out`` (default ``benchmarks/results``): ``quality_<suite>.csv`` / ``.md`` (aggregated rows, rows not
yet run marked ``pending``) and ``quality_<suite>_runs.jsonl`` (one line per finished run; ``--resume`` reuses it).
The tables are rewritten after every run, so a suite cut short still leaves its finished rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
from quality_report import aggregate, finish_command, write_tables  # noqa: E402
from quality_runs import epochs_cap, load_runs, run_one  # noqa: E402
from quality_suites import Row, suite_rows  # noqa: E402
from quality_throughput import measure_throughput  # noqa: E402

from dlf_torchrec import cli  # noqa: E402

SUITES = ("models", "dlf", "tf4ctr")
DEFAULT_SEEDS = {"models": [2019, 2020, 2021], "dlf": [2019], "tf4ctr": [2019]}
THROUGHPUT_SUITES = ("dlf", "tf4ctr")


# -------------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser("benchmarks/quality", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--suite", choices=SUITES, default="models")
    p.add_argument("--quick", action="store_true",
                   help="smoke run (< 1 min): one tiny DCNv2 on 3000 synthetic rows, 1 epoch, 1 seed")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="training.seed values (default: models 2019 2020 2021; dlf, tf4ctr 2019)")
    p.add_argument("--max-epochs", type=int, default=1,
                   help="cap on training.epochs for every row (0 = as configured); the default fits a suite into "
                        "the time of one shared 2-core session (one Frappe DCNv2 epoch ~ 20-50 s)")
    p.add_argument("--max-epochs-heads", type=int, default=0,
                   help="cap for the Criteo / Avazu head rows of the models suite (0 = as configured: 10 epochs with "
                        "early stopping; an epoch there is 16 steps)")
    p.add_argument("--only", nargs="+", default=None,
                   help="run only rows whose label contains one of these (the table still lists every row)")
    p.add_argument("--skip", nargs="+", default=None,
                   help="do not run rows whose label contains one of these (they stay pending in the table)")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished runs from quality_<suite>_runs.jsonl in --out instead of re-running them")
    p.add_argument("--no-throughput", action="store_true", help="skip the batch-4096 fwd+bwd column")
    p.add_argument("--throughput-batch", type=int, default=4096)
    p.add_argument("--throughput-windows", type=int, default=3)
    p.add_argument("--throughput-window-seconds", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=3600, help="seconds per trainer run (and for the throughput step)")
    p.add_argument("--work-dir", default=None, help="trainer output dirs (default: a temp dir)")
    p.add_argument("--out", default=common.DEFAULT_RESULTS_DIR, help="results directory")
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = [2019] if args.quick else DEFAULT_SEEDS[args.suite]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run("benchmarks/quality", lambda: _benchmark(args, argv), args.debug)


def _benchmark(args: argparse.Namespace, argv: list[str] | None) -> int:
    stamp = common.make_stamp([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    suite = args.suite
    rows, notes = suite_rows(suite, args.quick)
    selected = [r for r in rows if (not args.only or any(o in r.label for o in args.only))
                and not any(o in r.label for o in args.skip or [])]
    work_dir = args.work_dir or tempfile.mkdtemp(prefix=f"dlf_quality_{suite}_")
    os.makedirs(work_dir, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    quick_data = os.path.join(work_dir, "data_quick") if args.quick else None
    runs_path = os.path.join(args.out, f"quality_{suite}_runs.jsonl")
    runs = load_runs(runs_path) if args.resume else []
    if not args.resume and os.path.exists(runs_path):
        os.remove(runs_path)
    caps = {r.label: epochs_cap(r, args) for r in rows}
    finish = finish_command(suite, args)
    throughput_wanted = (suite in THROUGHPUT_SUITES or args.quick) and not args.no_throughput
    speeds: dict[str, Any] = {}
    speeds_path = os.path.join(args.out, f"quality_{suite}_throughput.json")
    if args.resume and os.path.exists(speeds_path):
        with open(speeds_path) as f:
            speeds = json.load(f)

    def flush() -> None:
        table = aggregate(rows, runs, args.seeds, caps, speeds, finish)
        write_tables(suite, table, args, stamp, notes, throughput_wanted)

    flush()
    start = time.perf_counter()
    done = {(r.label, r.seed) for r in runs if r.status == "ok"}
    runs = [r for r in runs if (r.label, r.seed) in done]  # failed runs are retried
    for seed in args.seeds:
        for row in selected:
            if (row.label, seed) in done:
                continue
            print(f"[{time.perf_counter() - start:6.0f}s] {row.label} seed {seed} (epochs <= {caps[row.label]}) ...",
                  flush=True)
            res = run_one(row, seed, caps[row.label], work_dir, args.timeout, quick_data)
            runs.append(res)
            with open(runs_path, "a") as f:
                f.write(json.dumps(res.__dict__) + "\n")
            print(f"    {res.status} valid auc={res.valid.get('auc', math.nan):.4f} "
                  f"logloss={res.valid.get('logloss', math.nan):.4f} epochs={res.epochs_run} {res.wall_s:.0f}s",
                  flush=True)
            flush()
    # Throughput after the quality runs: it is the cheaper column to finish later with --resume.
    if throughput_wanted:
        todo = [r for r in selected if r.throughput and not isinstance(speeds.get(r.label), float | int)]
        if args.quick:
            # The quick row's data lives in the work dir (not the config's shared data/processed/synthetic).
            todo = [Row(r.label, r.dataset, r.config, (*r.overrides, f"dataset.output_dir={quick_data}"))
                    for r in todo]
            os.makedirs(quick_data, exist_ok=True)
        speeds.update(measure_throughput(todo, args, work_dir))
        with open(speeds_path, "w") as f:
            json.dump(speeds, f, indent=1)
        flush()
    flush()
    print(f"wrote {args.out}/quality_{suite}.csv / .md, {runs_path} ({time.perf_counter() - start:.0f} s)")
    return 0 if all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
