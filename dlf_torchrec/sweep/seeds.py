"""Re-running the sweep's top-k configurations over several seeds: mean ± std of the valid metrics per config
(``seeds.csv``, ``seeds.md``), and ``best_config.yaml`` rewritten as the config with the best mean. Runs go to
``<sweep_dir>/seeds/trial_NNNN/seed_S``; a run that has its ``results.json`` is not run again, and the trial's own
run stands for the seed it trained with."""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any

import optuna
from optuna.trial import TrialState
from torchx.runner import Runner

from dlf_torchrec.sweep import launcher
from dlf_torchrec.sweep.launcher import Job
from dlf_torchrec.sweep.report import write_best_config, write_table
from dlf_torchrec.sweep.study import SweepSetup, run_summary


def _trial_seed(run_dir: str) -> int | None:
    import yaml

    try:
        with open(os.path.join(run_dir, "config.yaml")) as f:
            return int(yaml.safe_load(f)["training"]["seed"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (sample std, n - 1; 0 for one value) with 4 decimals; empty without values."""
    if not values:
        return ""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def run_seeds(setup: SweepSetup, study: optuna.Study, runner: Runner, seeds: list[int], top_k: int,
              log: Any = print) -> list[dict[str, Any]]:
    """Train the ``top_k`` best complete trials' configs with every seed of ``seeds`` (``concurrency`` runs at
    once); write and return the summary rows."""
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                      key=lambda t: -(t.value if t.value is not None else -math.inf))[:top_k]
    runs: dict[tuple[int, int], str] = {}
    pending: list[tuple[optuna.trial.FrozenTrial, int, str]] = []
    for t in complete:
        trial_dir = t.user_attrs.get("run_dir", setup.trial_dir(t.number))
        for seed in seeds:
            run_dir = trial_dir if seed == _trial_seed(trial_dir) else os.path.join(
                setup.sweep_dir, "seeds", f"trial_{t.number:04d}", f"seed_{seed}")
            runs[(t.number, seed)] = run_dir
            if not launcher.finished_ok(run_dir):
                pending.append((t, seed, run_dir))
    errors: dict[str, str] = {}
    active: list[Job] = []
    while pending or active:
        while pending and len(active) < setup.space.concurrency:
            t, seed, run_dir = pending.pop(0)
            values = setup.space.config_values(t.params)
            app = launcher.trial_app(setup.launch, setup.config, setup.trial_overrides(values, run_dir, seed),
                                     f"trial-{t.number}-seed-{seed}")
            try:
                active.append(Job(run_dir, runner.run(app, setup.launch.scheduler, setup.scheduler_cfg())))
                log(f"[sweep] seed run started: trial {t.number}, seed {seed} -> {run_dir}")
            except Exception as e:
                errors[run_dir] = f"launch failed: {e}"
        time.sleep(setup.poll_s)
        for job in list(active):
            state, error = launcher.poll(runner, job)
            if state != "running":
                active.remove(job)
                if state != "succeeded":
                    errors[job.run_dir] = error or state
                log(f"[sweep] seed run {job.run_dir}: {state}{f' ({error})' if error else ''}")
    rows = []
    for t in complete:
        values = setup.space.config_values(t.params)
        done = {seed: run_summary(runs[(t.number, seed)], setup.monitor) for seed in seeds
                if launcher.finished_ok(runs[(t.number, seed)])}
        scores = [d["score"] for d in done.values() if isinstance(d.get("score"), float)]
        row: dict[str, Any] = {"trial": t.number, "seeds": f"{len(done)}/{len(seeds)}",
                               "score_mean": f"{statistics.fmean(scores):.6f}" if len(scores) == len(seeds) else ""}
        for key in ("score", "auc", "logloss"):
            row[key] = mean_std([d[key] for d in done.values() if isinstance(d.get(key), float)])
        row.update(values)
        row["per_seed_score"] = " ".join(f"{s}:{d['score']:.4f}" for s, d in done.items())
        row["errors"] = "; ".join(f"seed {s}: {errors[runs[(t.number, s)]]}" for s in seeds
                                  if runs[(t.number, s)] in errors)
        rows.append(row)
    write_table(rows, setup.sweep_dir, "seeds",
                f"# Top {len(rows)} configurations over seeds {', '.join(map(str, seeds))}: valid mean ± std "
                f"(sample std)")
    write_best_config(study, setup.space, setup.config, setup.base_overrides, setup.sweep_dir)  # now the best mean
    return rows
