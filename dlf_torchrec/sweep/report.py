"""What a sweep leaves in its directory besides its state: the results table (``results.csv``, ``results.md``),
the best trial's resolved config (``best_config.yaml``), the monitor against the most important parameters
(``params.png``) and each trial's hyper-parameters for TensorBoard's HParams view (in the trial's run directory)."""

from __future__ import annotations

import csv
import math
import os
import warnings
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from dlf_torchrec import io
from dlf_torchrec.sweep.space import SweepSpace, yaml_value

RESULTS_CSV, RESULTS_MD, BEST_CONFIG, PARAMS_PLOT = "results.csv", "results.md", "best_config.yaml", "params.png"
SEEDS_CSV = "seeds.csv"
METRIC_COLUMNS = ("score", "auc", "logloss", "epochs", "wall_s")


def trial_rows(study: optuna.Study, space: SweepSpace) -> list[dict[str, Any]]:
    """One row per started trial: number, status, best valid monitor and metrics, epochs, wall time, parameters and
    error; sorted by the monitor (best first; trials without one last)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        a = t.user_attrs
        score = t.value if t.state == TrialState.COMPLETE else max(t.intermediate_values.values(), default=None)
        row: dict[str, Any] = {"trial": t.number, "status": t.state.name.lower(), "score": score,
                               "auc": a.get("auc"), "logloss": a.get("logloss"), "epochs": a.get("epochs"),
                               "wall_s": a.get("wall_s")}
        row.update(space.config_values(t.params))
        row["error"] = a.get("error", "")
        rows.append(row)
    return sorted(rows, key=lambda r: (r["score"] is None or not math.isfinite(r["score"]),
                                       -(r["score"] or 0.0), r["trial"]))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return yaml_value(value).strip('"') if isinstance(value, list | dict) else str(value)


def write_table(rows: list[dict[str, Any]], sweep_dir: str, stem: str, title: str) -> None:
    """``<stem>.csv`` and ``<stem>.md`` of ``rows`` (columns from the first row)."""
    if not rows:
        return
    columns = list(rows[0])
    with io.atomic_open(os.path.join(sweep_dir, f"{stem}.csv")) as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([[_cell(r.get(c)) for c in columns] for r in rows])
    lines = [title, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)).replace("|", "\\|") for c in columns) + " |" for r in rows]
    io.write_text(os.path.join(sweep_dir, f"{stem}.md"), "\n".join(lines) + "\n")


def write_results(study: optuna.Study, space: SweepSpace, sweep_dir: str, monitor: dict[str, float]) -> None:
    rows = trial_rows(study, space)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("complete", "pruned", "fail", "running")}
    monitor_text = " + ".join(f"{w:g}*{k}" for k, w in monitor.items())
    title = (f"# Sweep results ({space.sampler}, {len(rows)}/{space.budget} trials: " +
             ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f"); score = valid {monitor_text}, best first")
    write_table(rows, sweep_dir, "results", title)


def best_seed_mean(study: optuna.Study, sweep_dir: str) -> tuple[optuna.trial.FrozenTrial, str] | None:
    """The trial whose mean over every seed of ``seeds.csv`` is best, and the reason in words; None without a
    seed phase that finished all seeds of some configuration."""
    path = os.path.join(sweep_dir, SEEDS_CSV)
    if not io.exists(path):
        return None
    rows = list(csv.DictReader(io.read_text(path).splitlines()))
    full = [r for r in rows if r.get("score_mean")]  # seeds.py writes it only when every seed finished
    if not full:
        return None
    best = max(full, key=lambda r: float(r["score_mean"]))
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == int(best["trial"]))
    seeds = ", ".join(p.split(":")[0] for p in best["per_seed_score"].split())
    return trial, (f"best mean valid monitor over seeds {seeds}: {float(best['score_mean']):.6g}; the top "
                   f"{len(rows)} by single score re-run")


def write_best_config(study: optuna.Study, space: SweepSpace, config: str, base_overrides: list[str],
                      sweep_dir: str) -> str | None:
    """The best trial's whole config (base YAML + overrides + its values), ready to train; its
    ``training.output_dir`` is ``<sweep_dir>/best``. Once the seed phase has run, the best is the configuration
    with the best mean over the seeds (one run's best score is partly luck), before that the complete trial with
    the best score. None while no trial has completed."""
    from dlf_torchrec.config import load_config
    from dlf_torchrec.sweep.space import overrides

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        return None
    picked = best_seed_mean(study, sweep_dir)
    if picked is not None:
        best, why = picked
    else:
        best = max(complete, key=lambda t: t.value if t.value is not None else -math.inf)
        why = f"valid monitor {best.value:.6g}"
    values = space.config_values(best.params)
    cfg = load_config(config, [*base_overrides, *overrides(values),
                               f"training.output_dir={os.path.join(sweep_dir, 'best')}"])
    header = (f"# Best trial {best.number} of the sweep in {sweep_dir} ({why}, tuned on the "
              f"validation split only)\n# base: {config} {' '.join(base_overrides)}\n"
              + "".join(f"# {k}: {yaml_value(v)}\n" for k, v in values.items())
              + f"# python -m dlf_torchrec.train --config {os.path.join(sweep_dir, BEST_CONFIG)}\n")
    path = os.path.join(sweep_dir, BEST_CONFIG)
    io.write_text(path, header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


def importances(study: optuna.Study, space: SweepSpace) -> dict[str, float]:
    """Optuna's parameter importances (its default evaluator) over the complete trials; equal weights when they
    cannot be computed (too few complete trials, or no variation)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "too few trials": the equal weights are what we fall back to anyway
            return dict(optuna.importance.get_param_importances(study))
    except Exception:
        return {p.key: 1.0 / len(space.params) for p in space.params}


def plot_params(study: optuna.Study, space: SweepSpace, sweep_dir: str, most: int = 3) -> str | None:
    """``params.png``: the valid monitor of every trial against each of the ``most`` most important parameters
    (complete trials by their final monitor, pruned ones by their last reported epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    trials = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if not trials:
        return None
    weights = importances(study, space)
    keys = sorted((p.key for p in space.params), key=lambda k: -weights.get(k, 0.0))[:most]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        param = next(p for p in space.params if p.key == key)
        for state, color in ((TrialState.COMPLETE, "tab:blue"), (TrialState.PRUNED, "tab:gray")):
            pts = [(t.params[key], t.value if state == TrialState.COMPLETE else
                    t.intermediate_values[max(t.intermediate_values)])
                   for t in trials if t.state == state and key in t.params
                   and (state == TrialState.COMPLETE or t.intermediate_values)]
            if param.kind == "choices":
                labels = [str(c) for c in param.grid()]
                pts = [(labels.index(str(x)), y) for x, y in pts]
                ax.set_xticks(range(len(labels)), [_cell(param.decode(c)) for c in param.grid()], fontsize=7)
            if pts:
                ax.scatter([x for x, _ in pts], [y for _, y in pts], c=color, label=state.name.lower(), s=22)
        if param.kind == "log_range":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labelled minor ticks overlap
        ax.set_xlabel(f"{key} (importance {weights.get(key, 0.0):.2f})")
        ax.set_ylabel("valid monitor")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(sweep_dir, PARAMS_PLOT)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_hparams(run_dir: str, values: dict[str, Any], metrics: dict[str, Any], status: str) -> None:
    """A TensorBoard HParams session in the trial's run directory (beside its training scalars), so that
    ``tensorboard --logdir <sweep_dir>`` lists every trial with its parameters, status and best valid metrics."""
    try:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams
    except ImportError:
        return
    hp = {k: v if isinstance(v, bool | int | float | str) else _cell(v) for k, v in values.items()}
    hp["status"] = status
    scalars = {f"hparams/{k}": float(v) for k, v in metrics.items()
               if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
    exp, ssi, sei = hparams(hp, scalars)
    for name in io.listdir(run_dir):  # one session per trial: replace the one of an interrupted earlier finish
        if name.startswith("events.out.tfevents.") and name.endswith(".hparams"):
            io.remove(os.path.join(run_dir, name))
    with SummaryWriter(log_dir=run_dir, filename_suffix=".hparams") as writer:
        for summary in (exp, ssi, sei):
            writer.file_writer.add_summary(summary)
        for tag, value in scalars.items():
            writer.add_scalar(tag, value)
