"""Hyper-parameter sweep: every trial an ordinary training run launched through TorchX, with its own output dir.

    python -m dlf_torchrec.sweep --config configs/frappe/dcnv2.yaml --space sweep.yaml --dir runs/sweeps/frappe
    python -m dlf_torchrec.sweep ... --scheduler slurm --scheduler-cfg partition=gpu,time=02:00:00 -j 1x8 --gpu 8
    python -m dlf_torchrec.sweep ... --dryrun                    # print the first trials' scheduler requests
    python -m dlf_torchrec.sweep ... --top-k 3 --seeds 1,2,3     # then re-run the 3 best configs over 3 seeds
    tensorboard --logdir runs/sweeps/frappe                      # scalars of every trial and the HParams view

The space file (:mod:`dlf_torchrec.sweep.space`) holds the searched keys, the sampler (grid, random, tpe), the
budget, the concurrency and the median pruner; ``--trials``, ``--concurrency`` and ``--sampler`` override it.
Trailing ``key=value`` overrides apply to every trial. Running the same command again continues the sweep in its
directory: finished trials are not run again; the budget may be raised. Results: ``results.csv``/``results.md``,
``best_config.yaml``, ``params.png`` (and ``seeds.csv``/``seeds.md``) in the sweep directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import yaml

from dlf_torchrec import cli, io
from dlf_torchrec.cli import UsageError
from dlf_torchrec.config import ConfigError

SETUP_FILE = "sweep.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser("sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="base experiment YAML of every trial")
    p.add_argument("--space", required=True, help="sweep file: params, sampler, trials, concurrency, pruner")
    p.add_argument("--dir", default=None, help="sweep directory (default: runs/sweeps/<space file name>)")
    p.add_argument("--trials", type=int, default=None, help="trial budget (overrides the space file)")
    p.add_argument("--concurrency", type=int, default=None, help="trials at once (overrides the space file)")
    p.add_argument("--sampler", choices=("grid", "random", "tpe"), default=None, help="overrides the space file")
    p.add_argument("--scheduler", default="local_cwd", help="TorchX scheduler of the trials (local_cwd, slurm, ...)")
    p.add_argument("--scheduler-cfg", default="", help="scheduler run options, e.g. partition=gpu,time=01:00:00")
    p.add_argument("-j", default="1x1", help="nodes x processes of each trial (train component's -j)")
    p.add_argument("--cpu", type=int, default=2, help="CPUs per node of a trial")
    p.add_argument("--gpu", type=int, default=0, help="GPUs per node of a trial")
    p.add_argument("--memMB", type=int, default=8192, help="memory per node of a trial, MB")
    p.add_argument("--image", default=None, help="image / working directory of the trials (non-local schedulers)")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between looks at the running trials")
    p.add_argument("--dryrun", action="store_true", help="print the first trials' scheduler requests; run nothing")
    p.add_argument("--report-only", action="store_true", help="rewrite the tables, best config and plot; run nothing")
    p.add_argument("--top-k", type=int, default=0, help="after the search, re-run the k best configs over --seeds")
    p.add_argument("--seeds", default="", help="comma-separated training seeds for --top-k, e.g. 1,2,3")
    p.add_argument("overrides", nargs="*", help="config overrides applied to every trial, e.g. training.epochs=5")
    return p.parse_args(argv)


def _scheduler_cfg(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(kv) != 2 for kv in pairs):
        raise UsageError(f"--scheduler-cfg: expected key=value,key=value, got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def _check_keys(cfg_tree: dict[str, Any], keys: list[str]) -> None:
    """Every searched key names a config key of the base config (model keys are free when model.name is searched)."""
    free_model = "model.name" in keys
    for key in keys:
        node: Any = cfg_tree
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if free_model and key.startswith("model."):
                    break
                raise ConfigError(f"params.{key}: not a key of the base config")
            node = node[part]


def build_setup(args: argparse.Namespace) -> Any:
    from dlf_torchrec.config import load_config
    from dlf_torchrec.sweep.launcher import LaunchOptions
    from dlf_torchrec.sweep.space import parse_space
    from dlf_torchrec.sweep.study import SweepSetup

    try:
        with open(args.space) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{args.space}: not valid YAML: {e}") from e
    if isinstance(raw, dict):
        raw = {**raw, **{k: v for k, v in (("trials", args.trials), ("concurrency", args.concurrency),
                                           ("sampler", args.sampler)) if v is not None}}
    space = parse_space(raw, args.space)
    base = load_config(args.config, args.overrides)  # the base config must be valid before any trial starts
    _check_keys(base.to_dict(), [p.key for p in space.params])
    sweep_dir = args.dir or os.path.join("runs", "sweeps", os.path.splitext(os.path.basename(args.space))[0])
    launch = LaunchOptions(args.scheduler, _scheduler_cfg(args.scheduler_cfg), args.j, args.cpu, args.gpu,
                           args.memMB, args.image)
    setup = SweepSetup(args.config, list(args.overrides), space, sweep_dir, launch, dict(base.training.monitor),
                       args.poll)
    return setup, base, raw["params"]


def check_same_sweep(setup: Any, params: dict[str, Any]) -> None:
    """Record what the sweep searches in ``sweep.json``; a directory holding another sweep is an error."""
    path = os.path.join(setup.sweep_dir, SETUP_FILE)
    this = {"config": os.path.abspath(setup.config), "overrides": setup.base_overrides, "params": params,
            "sampler": setup.space.sampler}
    if os.path.exists(path):
        before = io.read_json(path)
        diff = [k for k in this if json.dumps(before.get(k), sort_keys=True) != json.dumps(this[k], sort_keys=True)]
        if diff:
            raise UsageError(f"{setup.sweep_dir} holds another sweep (its {', '.join(diff)} differ: see {path}); "
                             f"use another --dir")
    else:
        os.makedirs(setup.sweep_dir, exist_ok=True)
        io.write_json(path, this)


def dryrun(setup: Any) -> int:
    """Print the scheduler request of the first ``concurrency`` trials (an in-memory study: nothing is written)."""
    import optuna
    from torchx.runner import get_runner

    from dlf_torchrec.sweep.launcher import trial_app

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=setup.space.sampler_object())
    for point in setup.space.grid_points() if setup.space.sampler == "grid" else []:
        study.enqueue_trial(point)
    with get_runner() as runner:
        for _ in range(min(setup.space.concurrency, setup.space.budget)):
            trial = study.ask()
            run_dir = setup.trial_dir(trial.number)
            app = trial_app(setup.launch, setup.config, setup.trial_overrides(setup.space.suggest(trial), run_dir),
                            f"trial-{trial.number}")
            info = runner.dryrun(app, setup.launch.scheduler, setup.scheduler_cfg())
            print(f"=== trial {trial.number} ({setup.launch.scheduler}) -> {run_dir}\n{info}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from dlf_torchrec.sweep.launcher import prepare_local_environment

    setup, base, params = build_setup(args)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else []
    if args.top_k and not seeds:
        raise UsageError("--top-k needs --seeds, e.g. --seeds 1,2,3")
    if args.dryrun:
        return dryrun(setup)
    check_same_sweep(setup, params)
    from dlf_torchrec.sweep import report
    from dlf_torchrec.sweep.study import open_study

    study = open_study(setup)

    def write_report(final: bool = False) -> None:
        report.write_results(study, setup.space, setup.sweep_dir, setup.monitor)
        report.write_best_config(study, setup.space, setup.config, setup.base_overrides, setup.sweep_dir)
        if final:
            report.plot_params(study, setup.space, setup.sweep_dir)

    if args.report_only:
        write_report(final=True)
        return 0
    if setup.launch.local:
        from dlf_torchrec.data.preprocess import ensure_preprocessed

        prepare_local_environment()
        ensure_preprocessed(base.dataset)  # once here, not by concurrent trials racing on the same directory
    status = _run(setup, study, write_report, args.top_k, seeds)
    if status == 0:
        print(f"[sweep] done: {os.path.join(setup.sweep_dir, report.RESULTS_MD)}, "
              f"{os.path.join(setup.sweep_dir, report.BEST_CONFIG)}")
    return status


def _run(setup: Any, study: Any, write_report: Any, top_k: int, seeds: list[int]) -> int:
    """The trials (and seed runs) through one TorchX runner, closed on return (local runs still going are killed:
    the next call continues them)."""
    from torchx.runner import get_runner

    from dlf_torchrec.sweep.study import SweepLoop

    with get_runner() as runner:
        loop = SweepLoop(setup, runner)
        loop.on_finish.append(lambda s: write_report())
        try:
            loop.run(study)
            write_report(final=True)
            if top_k:
                from dlf_torchrec.sweep.seeds import run_seeds

                run_seeds(setup, study, runner, seeds, top_k)
        except BaseException as e:  # Ctrl-C / SIGTERM (torchx's local scheduler raises SignalException)
            if isinstance(e, KeyboardInterrupt) or type(e).__name__ == "SignalException":
                print(f"[sweep] interrupted: run the same command again to continue the sweep in {setup.sweep_dir}",
                      file=sys.stderr, flush=True)
                return 130
            raise
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run("sweep", lambda: _sweep(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
