"""Run tracking: a tiny training run's TensorBoard events hold what metrics.jsonl holds; curves.png; the STOP file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 epochs asked for, a STOP file placed before the start: the run stops after its first evaluation."""
    tmp = tmp_path_factory.mktemp("tracking")
    run = tmp / "run"
    run.mkdir()
    (run / "STOP").write_text("")
    cmd = [sys.executable, "-m", "dlf_torchrec.train", "--config", str(REPO / "configs/synthetic/dcnv2.yaml"),
           "dataset.synthetic_rows=3000", "training.epochs=3", "training.batch_size=512",
           f"dataset.output_dir={tmp / 'data'}", f"training.output_dir={run}", "training.progress=false",
           "dataset.progress=false", "training.evaluate_test=false"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run


def test_tensorboard_events_hold_the_logged_metrics(stopped_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    records = [json.loads(line) for line in (stopped_run / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(stopped_run), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/samples_per_s", "valid/auc", "valid/logloss", "valid/score",
            "final/valid/auc", "final/valid/logloss"} <= tags, tags
    assert any(t.startswith("lr/") for t in tags), tags

    def logged(tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in acc.Scalars(tag)]

    evals = [r for r in records if r["event"] == "eval"]
    epochs = [r for r in records if r["event"] == "train_epoch"]
    assert [s for s, _ in logged("valid/auc")] == [r["step"] for r in evals]
    assert [v for _, v in logged("valid/auc")] == pytest.approx([r["auc"] for r in evals], rel=1e-6)
    assert [v for _, v in logged("valid/logloss")] == pytest.approx([r["logloss"] for r in evals], rel=1e-6)
    assert [v for _, v in logged("train/loss")] == pytest.approx([r["loss"] for r in epochs], rel=1e-6)
    for role, lr in epochs[0]["lr"].items():
        assert logged(f"lr/{role}")[0][1] == pytest.approx(lr)
    assert (stopped_run / "curves.png").stat().st_size > 10_000


def test_stop_file_ends_the_run_like_an_early_stop(stopped_run: Path) -> None:
    records = [json.loads(line) for line in (stopped_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["event"] == "train_epoch"] == [0]
    assert any(r["event"] == "stop" for r in records)
    assert not (stopped_run / "STOP").exists()
    results = json.loads((stopped_run / "results.json").read_text())
    assert results["valid"]["auc"] > 0.5
