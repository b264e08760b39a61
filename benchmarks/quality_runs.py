"""One trainer run of the quality benchmark: the command, the subprocess, and what it leaves (results, speed)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import common
from quality_suites import Row

from dlf_torchrec.training.tracking import METRICS_FILE, read_metrics


@dataclass
class RunResult:
    """One finished (or failed) trainer run."""

    label: str
    seed: int
    status: str
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    train_samples_per_s: float | None = None
    epochs_run: int = 0
    wall_s: float = 0.0
    command: str = ""



def configured_epochs(row: Row) -> int:
    from dlf_torchrec.config import load_config

    return load_config(os.path.join(common.REPO_ROOT, row.config), list(row.overrides)).training.epochs


def epochs_cap(row: Row, args: argparse.Namespace) -> int:
    """The configured epochs capped by ``--max-epochs`` (head samples: ``--max-epochs-heads``)."""
    cap = args.max_epochs_heads if row.dataset in ("criteo", "avazu") else args.max_epochs
    configured = configured_epochs(row)
    return configured if not cap else min(configured, cap)


def train_command(row: Row, seed: int, epochs: int, out_dir: str, quick_data: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "dlf_torchrec.train", "--config", row.config, *row.overrides,
           f"training.seed={seed}", f"training.epochs={epochs}", f"training.output_dir={out_dir}",
           "training.progress=false", "dataset.progress=false"]
    if quick_data:
        cmd.append(f"dataset.output_dir={quick_data}")
    return cmd


def run_one(row: Row, seed: int, epochs: int, work_dir: str, timeout: float, quick_data: str | None) -> RunResult:
    """Train once in a subprocess; collect results.json and the median train samples/s."""
    slug = "".join(c if c.isalnum() else "_" for c in row.label).strip("_")
    out_dir = os.path.join(work_dir, slug, f"seed{seed}")
    shutil.rmtree(out_dir, ignore_errors=True)  # a leftover checkpoint would make the trainer resume from it
    os.makedirs(out_dir, exist_ok=True)
    cmd = train_command(row, seed, epochs, out_dir, quick_data)
    shown = " ".join(shlex.quote(c) for c in ["python", *cmd[1:]])
    t0 = time.perf_counter()
    with open(os.path.join(out_dir, "train.log"), "w") as log:
        try:
            proc = subprocess.run(cmd, cwd=common.REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
            status = "ok" if proc.returncode == 0 else f"error: exit {proc.returncode} (see {out_dir}/train.log)"
        except subprocess.TimeoutExpired:
            status = f"error: timeout after {timeout:.0f} s"
    result = RunResult(row.label, seed, status, wall_s=time.perf_counter() - t0, command=shown)
    res_path = os.path.join(out_dir, "results.json")
    if status == "ok" and os.path.exists(res_path):
        with open(res_path) as f:
            res = json.load(f)
        result.valid = res.get("valid", {})
        result.test = res.get("test", {})
    elif status == "ok":
        result.status = "error: no results.json"
    speeds = [float(ev["samples_per_s"]) for ev in read_metrics(os.path.join(out_dir, METRICS_FILE))
              if ev.get("event") == "train_epoch"]
    result.epochs_run = len(speeds)
    result.train_samples_per_s = statistics.median(speeds) if speeds else None
    shutil.rmtree(os.path.join(out_dir, "checkpoints"), ignore_errors=True)  # results are collected; save disk
    return result



def load_runs(path: str) -> list[RunResult]:
    runs = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    runs.append(RunResult(**json.loads(line)))
    return runs
