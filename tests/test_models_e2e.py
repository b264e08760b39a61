"""DLF and TF4CTR train through the sharded trainer on 2 gloo ranks (torchrun) and their loss falls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def train_two_ranks(config: str, tmp_path: Path, *overrides: str) -> list[dict]:
    """torchrun 2 ranks on a small synthetic dataset; returns the metrics.jsonl records."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dlf_torchrec.train", "--config", str(REPO / config),
           "dataset.synthetic_rows=6000", f"dataset.output_dir={tmp_path / 'data'}",
           f"training.output_dir={tmp_path / 'run'}", "training.batch_size=256", "training.epochs=3",
           "training.early_stop_patience=5", "training.progress=false", "dataset.progress=false",
           "training.num_workers=0", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "world size 2" in proc.stdout
    return [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def epoch_losses(records: list[dict]) -> list[float]:
    return [r["loss"] for r in records if r["event"] == "train_epoch"]


@pytest.mark.slow
@pytest.mark.parametrize("form", ["authors", "paper"])
def test_dlf_trains_on_two_ranks(form: str, tmp_path: Path) -> None:
    losses = epoch_losses(train_two_ranks("configs/synthetic/dlf.yaml", tmp_path, f"model.form={form}",
                                          "model.num_layers=2", "model.block_hidden=64", "model.num_tokens_high=8",
                                          "model.num_tokens_low=8", "model.num_tokens_implicit=8"))
    assert len(losses) == 3 and losses[-1] < losses[0], losses


@pytest.mark.slow
def test_tf4ctr_ser_wsf_trains_on_two_ranks(tmp_path: Path) -> None:
    records = train_two_ranks("configs/synthetic/tf4ctr.yaml", tmp_path, "model.ssem=ser", "model.dfm=wsf",
                              "model.simple_hidden_units=[64]", "model.complex_hidden_units=[64,64]")
    losses = epoch_losses(records)
    assert len(losses) == 3 and losses[-1] < losses[0], losses
