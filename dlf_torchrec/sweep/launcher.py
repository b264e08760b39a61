"""Launching trials as ordinary training runs through TorchX (the repository's ``train`` component), and watching
them: state, error line, and runs left behind by a sweep that was killed."""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from torchx.runner import Runner
from torchx.specs import AppDef, AppState

from dlf_torchrec.training.runlock import LOCK_FILE
from dlf_torchrec.training.tracking import METRICS_FILE, read_metrics

RESULTS_FILE = "results.json"
ERROR_LINE = re.compile(r"\btrain: error: .*")


@dataclass
class LaunchOptions:
    """How every trial is launched: the TorchX scheduler, its run config, and the ``train`` component's options."""

    scheduler: str = "local_cwd"
    scheduler_cfg: dict[str, str] = field(default_factory=dict)
    j: str = "1x1"
    cpu: int = 2
    gpu: int = 0
    memMB: int = 8192  # noqa: N815 - the component's parameter name
    image: str | None = None

    @property
    def local(self) -> bool:
        return self.scheduler.startswith("local")


def trial_app(opts: LaunchOptions, config: str, overrides: list[str], name: str) -> AppDef:
    """The ``train`` component's AppDef for one run: ``--config CONFIG OVERRIDES...``."""
    from torchx_components.components import train

    kwargs: dict[str, Any] = {"image": opts.image} if opts.image else {}
    return train(*overrides, config=config, j=opts.j, cpu=opts.cpu, gpu=opts.gpu, memMB=opts.memMB, name=name,
                 **kwargs)


def prepare_local_environment() -> None:
    """Local schedulers start ``torchrun`` from PATH: put this interpreter's one first (a venv not activated)."""
    bin_dir = os.path.dirname(sys.executable)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


@dataclass
class Job:
    """One launched run: its TorchX handle (None for a run left behind by a killed sweep, watched through its run
    lock), its output directory, and when this sweep started it."""

    run_dir: str
    handle: str | None
    started: float = field(default_factory=time.time)


def lock_held(run_dir: str) -> bool:
    """Whether a live process on this host holds the run's lock (a run of a killed sweep still training)."""
    import json
    import socket

    try:
        with open(os.path.join(run_dir, LOCK_FILE)) as f:
            owner = json.load(f)
        pid = int(owner.get("pid"))
    except (OSError, ValueError, TypeError):
        return False
    if owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finished_ok(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, RESULTS_FILE))


def poll(runner: Runner, job: Job) -> tuple[str, str | None]:
    """``("running" | "succeeded" | "failed" | "lost", error)``. ``lost``: a watched run whose process is gone
    without results (the caller launches it again; the trainer resumes from its checkpoint)."""
    if job.handle is None:
        if lock_held(job.run_dir):
            return "running", None
        return ("succeeded", None) if finished_ok(job.run_dir) else ("lost", None)
    status = runner.status(job.handle)
    if status is None:
        return "failed", "the scheduler no longer knows the job"
    if not status.is_terminal():
        return "running", None
    if status.state == AppState.SUCCEEDED:
        return "succeeded", None
    return "failed", error_of(runner, job, status.state.name, status.msg)


def error_of(runner: Runner, job: Job, state: str, msg: str = "") -> str:
    """The trainer's ``train: error: ...`` line from the job's logs, else the last log line, else the state."""
    lines: list[str] = []
    try:
        lines = [line.rstrip() for line in runner.log_lines(job.handle or "", "train", 0) if line.strip()]
    except Exception:  # logs are best effort: some schedulers keep none
        pass
    errors = [m.group(0) for line in lines if (m := ERROR_LINE.search(line))]
    if errors:
        return errors[-1][:500]
    tail = lines[-1][:500] if lines else (msg or "")[:500]
    return f"{state}: {tail}" if tail else state


def epochs_trained(run_dir: str) -> int:
    return len({r.get("epoch") for r in read_metrics(os.path.join(run_dir, METRICS_FILE))
                if r.get("event") == "train_epoch"})
