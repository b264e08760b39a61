"""Run tracking beside ``metrics.jsonl``: TensorBoard event files while a run trains, ``curves.png`` at its end.

:class:`~dlf_torchrec.training.loop.MetricsLog` hands every record it writes to :class:`RunTracker` (rank 0 only),
so the JSON-lines log and the TensorBoard scalars always hold the same numbers:

=================  ============================================================================================
``train_epoch``    ``train/loss`` (mean over the epoch), ``train/samples_per_s``, ``lr/<optimizer>``
``eval``           ``valid/auc``, ``valid/logloss``, ``valid/score`` (the monitor), ``valid/gauc`` if reported
``lr_decay``       ``lr/<optimizer>`` after the cut
``final``          ``final/<split>/auc``, ``final/<split>/logloss`` (the restored best checkpoint)
=================  ============================================================================================

The x axis is the global step. ``tensorboard --logdir runs/`` shows every run under ``runs/``; a resumed run appends
a new event file to the same directory. :func:`plot_curves` draws ``curves.png`` from ``metrics.jsonl`` (so it also
covers the epochs trained before a resume); ``python -m dlf_torchrec.training.tracking RUN_DIR`` redraws it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from typing import Any

from dlf_torchrec import io

CURVES_FILE = "curves.png"
METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a torn last line, as a killed run may leave, is skipped)."""
    records = []
    try:
        with io.open_file(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
    except FileNotFoundError:
        pass
    return records


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars (tag -> value) of one metrics.jsonl record; non-numbers (null AUC) are left out."""
    event = record.get("event")
    if event == "train_epoch":
        out = {"train/loss": record.get("loss"), "train/samples_per_s": record.get("samples_per_s")}
        out.update({f"lr/{k}": v for k, v in (record.get("lr") or {}).items()})
    elif event == "eval":
        out = {f"{record.get('split', 'valid')}/{k}": record.get(k) for k in ("auc", "logloss", "gauc", "score")}
    elif event == "lr_decay":
        out = {f"lr/{k}": v for k, v in (record.get("lr") or {}).items()}
    elif event == "final":
        out = {f"final/{record.get('split')}/{k}": record.get(k) for k in ("auc", "logloss", "gauc")}
    else:
        return {}
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class RunTracker:
    """TensorBoard scalars for the records of ``metrics.jsonl``; writes ``curves.png`` on :meth:`close`.

    Without the ``tensorboard`` package the event files are skipped (with a warning); the curves are still drawn.
    """

    def __init__(self, output_dir: str, enabled: bool) -> None:
        self.output_dir, self.enabled = output_dir, enabled
        self.last_step = 0
        self._writer: Any = None
        # TensorBoard appends to its event file: on an object store it writes a local copy, uploaded at each flush.
        self._log_dir = output_dir if io.is_local(output_dir) else io.cache_path("tensorboard", output_dir)
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # pragma: no cover - tensorboard is in requirements.txt
                warnings.warn(f"TensorBoard logging is off ({e}); pip install tensorboard", stacklevel=2)
            else:
                if self._log_dir != output_dir:  # only this run's event file, not an earlier run's, is uploaded
                    shutil.rmtree(self._log_dir, ignore_errors=True)
                self._writer = SummaryWriter(log_dir=self._log_dir, flush_secs=30)

    def _flush(self) -> None:
        self._writer.flush()
        if self._log_dir != self.output_dir:
            io.upload_files(self._log_dir, self.output_dir)

    def record(self, record: dict[str, Any]) -> None:
        if self._writer is None:
            return
        step = record.get("step")
        self.last_step = step if isinstance(step, int) else self.last_step
        for tag, value in scalars(record).items():
            self._writer.add_scalar(tag, value, self.last_step, walltime=record.get("time"))
        if record.get("event") in ("eval", "final"):
            self._flush()  # a sweep (or a person) watching the run sees each evaluation at once

    def close(self) -> None:
        """Flush the event file and draw ``curves.png`` from the run's whole ``metrics.jsonl``."""
        if not self.enabled:
            return
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None
        try:
            plot_curves(self.output_dir)
        except Exception as e:  # a plotting problem must not fail a finished run
            warnings.warn(f"{CURVES_FILE} not written: {type(e).__name__}: {e}", stacklevel=2)


def plot_curves(run_dir: str, out: str | None = None) -> str | None:
    """Draw train loss, valid AUC/logloss, learning rates and samples/s against the global step from
    ``run_dir/metrics.jsonl`` into ``out`` (default ``run_dir/curves.png``); None when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list[int], list[float]]] = {}
    step = 0
    for record in read_metrics(os.path.join(run_dir, METRICS_FILE)):
        step = record["step"] if isinstance(record.get("step"), int) else step
        if record.get("event") == "final":
            continue
        for tag, value in scalars(record).items():
            xs, ys = series.setdefault(tag, ([], []))
            xs.append(step)
            ys.append(value)
    if not series:
        return None
    panels = [("train loss", ["train/loss"]), ("valid AUC", ["valid/auc", "valid/gauc"]),
              ("valid logloss", ["valid/logloss"]), ("learning rate", sorted(t for t in series if t.startswith("lr/"))),
              ("samples/s", ["train/samples_per_s"])]
    fig, grid = plt.subplots(2, 3, figsize=(12, 6.4))
    axes = grid.ravel()
    axes[-1].axis("off")
    for ax, (title, tags) in zip(axes, panels, strict=False):
        for tag in (t for t in tags if t in series):
            xs, ys = series[tag]
            ax.plot(xs, ys, marker="o", markersize=3, label=tag.split("/", 1)[1])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if title == "learning rate" and any(series[t][1] and min(series[t][1]) > 0 for t in tags):
            ax.set_yscale("log")
        if len([t for t in tags if t in series]) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(os.path.basename(os.path.normpath(run_dir)))
    fig.tight_layout()
    path = out or os.path.join(run_dir, CURVES_FILE)
    with io.atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=90, format="png")
    plt.close(fig)
    return path


if __name__ == "__main__":
    for directory in sys.argv[1:] or ["."]:
        print(plot_curves(directory) or f"{directory}: no metrics to plot")
