"""The sweep loop: ask Optuna for trials, launch each as a TorchX training run, report its per-epoch valid monitor
to the median pruner (a pruned trial gets a STOP file), and tell Optuna how it ended.

All state lives in the sweep directory: ``study.db`` (Optuna's SQLite storage: every trial's parameters, state,
per-epoch values and attributes) and ``trials/trial_NNNN/`` (each trial's training output directory). A sweep
started again on the same directory continues: finished trials (complete, pruned, failed) stay as they are;
trials that were running are watched until their process ends (if it outlived the sweep), else launched again in
place, where the trainer resumes from their last checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState
from torchx.runner import Runner

from dlf_torchrec.sweep import launcher, report
from dlf_torchrec.sweep.launcher import Job, LaunchOptions
from dlf_torchrec.sweep.space import SweepSpace, overrides
from dlf_torchrec.training.loop import STOP_FILE
from dlf_torchrec.training.tracking import METRICS_FILE, read_metrics

STUDY_NAME = "sweep"
STUDY_FILE = "study.db"


@dataclass
class SweepSetup:
    """What a sweep runs: the base config (and overrides), the space, where, and how trials are launched."""

    config: str
    base_overrides: list[str]
    space: SweepSpace
    sweep_dir: str
    launch: LaunchOptions
    monitor: dict[str, float]
    poll_s: float = 2.0

    def trial_dir(self, number: int) -> str:
        return os.path.join(self.sweep_dir, "trials", f"trial_{number:04d}")

    def trial_overrides(self, values: dict[str, Any], run_dir: str, seed: int | None = None) -> list[str]:
        """The overrides of one training run: the base ones, the trial's values, its own output directory."""
        extra = [f"training.seed={seed}"] if seed is not None else []
        return [*self.base_overrides, *overrides(values), *extra, f"training.output_dir={run_dir}",
                "training.progress=false", "dataset.progress=false"]

    def scheduler_cfg(self) -> dict[str, str]:
        cfg = dict(self.launch.scheduler_cfg)
        if self.launch.local:  # keep each trial's stdout/stderr in the sweep directory
            cfg.setdefault("log_dir", os.path.join(os.path.abspath(self.sweep_dir), "torchx_logs"))
        return cfg


def open_study(setup: SweepSetup) -> optuna.Study:
    """The sweep's study in ``<sweep_dir>/study.db`` (created, or loaded to continue); grid points enqueued once."""
    os.makedirs(setup.sweep_dir, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=f"sqlite:///{os.path.abspath(os.path.join(setup.sweep_dir, STUDY_FILE))}",
        direction="maximize", sampler=setup.space.sampler_object(), pruner=setup.space.pruner_object(),
        load_if_exists=True)
    if setup.space.sampler == "grid":
        enqueued = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)} | {
            tuple(sorted(t.system_attrs.get("fixed_params", {}).items())) for t in study.get_trials(deepcopy=False)}
        for point in setup.space.grid_points()[:setup.space.budget]:
            if tuple(sorted(point.items())) not in enqueued:
                study.enqueue_trial(point)
    return study


def score_of(metrics: dict[str, Any], monitor: dict[str, float]) -> float:
    """The monitor (sum of weight * metric); NaN when a metric is missing or undefined."""
    values = [metrics.get(k) for k in monitor]
    if any(not isinstance(v, int | float) for v in values):
        return math.nan
    return sum(w * float(v) for w, v in zip(monitor.values(), values, strict=True))


def epoch_scores(run_dir: str, monitor: dict[str, float]) -> dict[int, float]:
    """The valid monitor after each trained epoch (epochs counted from 1), from the run's ``metrics.jsonl``: the
    evaluation that follows each ``train_epoch`` record (mid-epoch evaluations are not pruning steps)."""
    out: dict[int, float] = {}
    last_epoch = None
    for record in read_metrics(os.path.join(run_dir, METRICS_FILE)):
        if record.get("event") == "train_epoch":
            last_epoch = record.get("epoch")
        elif record.get("event") == "eval" and last_epoch is not None and record.get("epoch") == last_epoch:
            out.setdefault(int(last_epoch) + 1, score_of(record, monitor))
            last_epoch = None
    return out


def run_summary(run_dir: str, monitor: dict[str, float]) -> dict[str, Any]:
    """The run's best valid evaluation (by the monitor) and the epochs it trained."""
    evals = [r for r in read_metrics(os.path.join(run_dir, METRICS_FILE)) if r.get("event") == "eval"]
    scored = [(score_of(r, monitor), r) for r in evals]
    scored = [(s, r) for s, r in scored if math.isfinite(s)]
    best = max(scored, key=lambda sr: sr[0]) if scored else (math.nan, {})
    out = {"score": best[0], "epochs": launcher.epochs_trained(run_dir)}
    out.update({k: best[1].get(k) for k in ("auc", "logloss", "gauc") if k in best[1]})
    return out


@dataclass
class Active:
    """A trial whose run this sweep is launching or watching."""

    trial: optuna.trial.Trial
    values: dict[str, Any]
    job: Job
    reported: set[int] = field(default_factory=set)
    pruned_at: int | None = None


class SweepLoop:
    """Runs a sweep to its budget with ``concurrency`` trials at once (see the module docstring)."""

    def __init__(self, setup: SweepSetup, runner: Runner, log: Any = print) -> None:
        self.setup, self.runner, self.log = setup, runner, log
        self.on_finish: list[Any] = []  # callbacks(study) after each finished trial (the results table)

    def run(self, study: optuna.Study) -> optuna.Study:
        s = self.setup
        active: dict[int, Active] = {}
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            active[frozen.number] = self._adopt(study, frozen)
        while True:
            while len(active) < s.space.concurrency and self._started(study) < s.space.budget:
                trial = study.ask()
                values = s.space.suggest(trial)
                act = self._launch(study, trial, values)
                if act is not None:
                    active[trial.number] = act
            if not active:
                return study
            time.sleep(s.poll_s)
            for number, act in list(active.items()):
                self._report(act)
                state, error = launcher.poll(self.runner, act.job)
                if state == "running":
                    continue
                if state == "lost":  # a run of a killed sweep that died without results: train it on
                    self.log(f"[sweep] trial {number}: its run ended without results; launching it again")
                    act.job = self._submit(act.trial, act.values, act.job.run_dir)
                    continue
                if state == "failed" and act.job.handle is not None and launcher.lock_held(act.job.run_dir):
                    # Relaunched while the killed sweep's run of it was still starting: that run holds the
                    # directory (ours stopped on its run lock), so watch it instead.
                    self.log(f"[sweep] trial {number}: an earlier launch of it holds its directory; watching it")
                    act.job = Job(act.job.run_dir, None, act.job.started)
                    continue
                self._finish(study, act, state, error)
                del active[number]

    @staticmethod
    def _started(study: optuna.Study) -> int:
        return sum(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False))

    def _submit(self, trial: optuna.trial.Trial, values: dict[str, Any], run_dir: str) -> Job:
        s = self.setup
        os.makedirs(run_dir, exist_ok=True)
        app = launcher.trial_app(s.launch, s.config, s.trial_overrides(values, run_dir), f"trial-{trial.number}")
        handle = self.runner.run(app, s.launch.scheduler, s.scheduler_cfg())
        trial.set_user_attr("run_dir", run_dir)
        trial.set_user_attr("app_handle", handle)
        if "started_at" not in trial.user_attrs:  # wall time counts from the first launch, across sweep restarts
            trial.set_user_attr("started_at", time.time())
        return Job(run_dir, handle)

    def _launch(self, study: optuna.Study, trial: optuna.trial.Trial, values: dict[str, Any]) -> Active | None:
        run_dir = self.setup.trial_dir(trial.number)
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        try:
            job = self._submit(trial, values, run_dir)
        except Exception as e:  # a launch that fails is the trial's failure, not the sweep's
            trial.set_user_attr("error", f"launch failed: {type(e).__name__}: {e}"[:500])
            study.tell(trial, state=TrialState.FAIL)
            self.log(f"[sweep] trial {trial.number} could not be launched ({shown}): {e}")
            self._finished(study)
            return None
        self.log(f"[sweep] trial {trial.number} started: {shown} -> {run_dir}")
        return Active(trial, values, job)

    def _adopt(self, study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> Active:
        """A trial left running by a killed sweep: re-attach to its job if the scheduler still runs it, watch its
        process if that outlived the sweep (its run lock), else launch it again (the trainer resumes)."""
        trial = optuna.trial.Trial(study, frozen._trial_id)
        if {p.key for p in self.setup.space.params} <= set(frozen.params):
            values = self.setup.space.config_values(frozen.params)
        else:  # killed between ask and suggest: sample now (an enqueued grid point gets its fixed values)
            values = self.setup.space.suggest(trial)
        run_dir = frozen.user_attrs.get("run_dir", self.setup.trial_dir(frozen.number))
        handle = frozen.user_attrs.get("app_handle")
        status = None
        if handle and not self.setup.launch.local:
            try:
                status = self.runner.status(handle)
            except Exception:
                status = None
        if status is not None and not status.is_terminal():
            job, how = Job(run_dir, handle), "re-attached to its job"
        elif launcher.lock_held(run_dir) or launcher.finished_ok(run_dir):
            job, how = Job(run_dir, None), "watching its run"
        else:
            job, how = self._submit(trial, values, run_dir), "launched again (the trainer resumes)"
        self.log(f"[sweep] trial {frozen.number} was running when the sweep stopped: {how}")
        return Active(trial, values, job, set(frozen.intermediate_values), frozen.user_attrs.get("pruned_at"))

    def _report(self, act: Active) -> None:
        """Report the run's new per-epoch scores; on the pruner's word, ask the run to stop (STOP file)."""
        new = {e: v for e, v in epoch_scores(act.job.run_dir, self.setup.monitor).items()
               if e not in act.reported and math.isfinite(v)}
        for epoch in sorted(new):
            act.trial.report(new[epoch], epoch)
            act.reported.add(epoch)
        if new and act.pruned_at is None and act.trial.should_prune():
            act.pruned_at = max(new)
            act.trial.set_user_attr("pruned_at", act.pruned_at)
            with open(os.path.join(act.job.run_dir, STOP_FILE), "w") as f:
                f.write(f"pruned by the sweep after epoch {act.pruned_at}\n")
            self.log(f"[sweep] trial {act.trial.number} pruned after epoch {act.pruned_at} "
                     f"(valid monitor {new[max(new)]:.4f} below the median): stopping it")

    def _finish(self, study: optuna.Study, act: Active, state: str, error: str | None) -> None:
        summary = run_summary(act.job.run_dir, self.setup.monitor)
        trial = act.trial
        trial.set_user_attr("wall_s", round(time.time() - trial.user_attrs.get("started_at", act.job.started), 1))
        for key in ("epochs", "auc", "logloss", "gauc"):
            if summary.get(key) is not None:
                trial.set_user_attr(key, summary[key])
        if act.pruned_at is not None:
            status, how = "pruned", f"pruned (best valid monitor {summary['score']:.4f})"
        elif state == "succeeded" and math.isfinite(summary["score"]):
            status, how = "complete", f"complete: valid monitor {summary['score']:.4f} after {summary['epochs']} epochs"
        else:
            error = error or "no defined valid monitor in metrics.jsonl"
            status, how = "fail", f"failed: {error}"
            trial.set_user_attr("error", error)
        # The HParams session before the study hears of the end: a finished trial is never visited again, so a
        # driver killed in between would leave it without one (a resumed, unfinished trial rewrites it instead).
        report.write_hparams(act.job.run_dir, act.values, summary, status)
        if status == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        elif status == "complete":
            study.tell(trial, summary["score"])
        else:
            study.tell(trial, state=TrialState.FAIL)
        self.log(f"[sweep] trial {trial.number} {how}")
        self._finished(study)

    def _finished(self, study: optuna.Study) -> None:
        for callback in self.on_finish:
            callback(study)
