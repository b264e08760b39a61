"""End-to-end: preprocess real data and train through the sharded trainer (CLI, world size 1), check the AUC."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def train(config: str, tmp_path: Path, *overrides: str) -> dict[str, dict[str, float]]:
    """Run ``python -m dlf_torchrec.train`` into tmp_path; return results.json."""
    cmd = [sys.executable, "-m", "dlf_torchrec.train", "--config", str(REPO / config),
           f"dataset.output_dir={tmp_path / 'data'}", f"training.output_dir={tmp_path / 'run'}",
           "training.progress=false", "dataset.progress=false", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "best checkpoint valid: AUC=" in proc.stdout
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["event"] == "eval" for r in log) and any(r["event"] == "final" for r in log)
    return results


@pytest.mark.slow
def test_dcnv2_on_criteo_head(tmp_path: Path) -> None:
    results = train("configs/criteo/dcnv2.yaml", tmp_path)
    assert results["valid"]["auc"] > 0.68, results
    assert 900 <= results["valid"]["rows"] <= 1100 and "test" in results


@pytest.mark.slow
def test_dcnv2_on_avazu_head(tmp_path: Path) -> None:
    results = train("configs/avazu/dcnv2.yaml", tmp_path)
    assert results["valid"]["auc"] > 0.65, results


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~2 min on a quiet 2-core machine; 10+ min when the machine is shared
def test_dcnv2_on_frappe(tmp_path: Path) -> None:
    results = train("configs/frappe/dcnv2.yaml", tmp_path, "training.epochs=3")  # 0.959 after 3 epochs, seed 2019
    assert results["valid"]["auc"] > 0.95, results
    assert results["valid"]["rows"] == 57722 and "test" not in results
