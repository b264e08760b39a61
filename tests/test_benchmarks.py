"""The throughput benchmark runs end to end (``--quick``) and writes stamped, well-formed results.

Structure only: no speed threshold (timings on shared CI machines are noise).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import batches  # noqa: E402
import common  # noqa: E402
import throughput_report  # noqa: E402

STAMP_KEYS = ("command", "git_commit", "utc_time", "machine", "python", "torch", "torchrec", "fbgemm_gpu")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("throughput")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "throughput.py"), "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "samples_per_s" in proc.stdout  # the printed table
    return str(out)


@pytest.mark.slow
def test_quick_run_writes_all_files(quick_run: str) -> None:
    for name in ("throughput.csv", "throughput.md", "throughput.png", "throughput_scaling.png"):
        path = os.path.join(quick_run, name)
        assert os.path.getsize(path) > 0, name
    for name in ("throughput.png", "throughput_scaling.png"):
        with open(os.path.join(quick_run, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_csv_structure_stamp_and_ratios(quick_run: str) -> None:
    stamp, rows = common.read_csv(os.path.join(quick_run, "throughput.csv"))
    for key in STAMP_KEYS:
        assert stamp.get(key), key
    assert "--quick" in stamp["command"]
    assert len(stamp["git_commit"].split()[0]) == 40 or stamp["git_commit"] == "unknown"
    assert rows and list(rows[0]) == list(throughput_report.COLUMNS)
    variants = {r["variant"] for r in rows}
    assert {"fused", "plain_dense", "plain_sparse"} <= variants
    for r in rows:
        assert r["status"].startswith("ok"), r
        assert float(r["samples_per_s"]) > 0
        assert float(r["samples_per_s_min"]) <= float(r["samples_per_s"]) <= float(r["samples_per_s_max"])
        assert float(r["peak_rss_mib"]) > 0
        assert len(r["peak_rss_mib_per_rank"].split(";")) == int(r["world_size"])
        assert int(r["batch_size"]) == int(r["batch_per_rank"]) * int(r["world_size"])
    fused = [r for r in rows if r["variant"] == "fused"]
    assert fused and all(float(r["ratio_fused_vs_plain_dense"]) > 0 for r in fused)
    assert all(r["step_loop"] == "TrainPipelineSparseDist" for r in fused)


@pytest.mark.slow
def test_markdown_carries_stamp_and_comparison(quick_run: str) -> None:
    with open(os.path.join(quick_run, "throughput.md")) as f:
        text = f.read()
    assert text.startswith("<!--")
    for key in STAMP_KEYS:
        assert f"{key}: " in text, key
    assert "fused_tw / plain_dense" in text and "## All configurations" in text


def test_criteo_cardinalities_are_capped() -> None:
    capped = batches.cardinalities(1000)
    assert len(capped) == 26 and max(capped) == 1000 and min(capped) >= 3
    assert batches.cardinalities(0)[2] == 10131227 + 2  # 0 = uncapped real sizes (+ PAD, OOV)


def test_batches_are_criteo_shaped() -> None:
    spec = batches.feature_spec(500)
    (batch,) = batches.make_batches(spec, 64, 1, 1.1, 0)
    assert batch.dense_features.shape == (64, 13) and batch.labels.shape == (64,)
    kjt = batch.sparse_features
    assert kjt.keys() == spec.categorical_names and kjt.values().numel() == 64 * 26
    ids = kjt.values().view(26, 64)
    for i, f in enumerate(spec.categorical):
        assert int(ids[i].min()) >= 1 and int(ids[i].max()) <= f.vocab_size - 2


def test_synthetic_ceiling_beats_first_order_and_stays_below_the_oracle(tmp_path) -> None:
    """The well-specified model knows the teacher's features: on the generator's rows it must come close to the
    oracle (far above a first-order model's ~0.78 ratio) without exceeding it by more than estimation noise."""
    import synthetic_ceiling

    rows = synthetic_ceiling.ceiling(40_000, 7, [1.0])
    assert rows[0]["train_rows"] == 32_000 and 0.5 < rows[0]["oracle_auc"] < 1
    assert 0.9 < rows[0]["ratio"] < 1.02, rows
    # Told the pairs but not which tokens carry signal, the same regression must fit the noise of the tail.
    untold = synthetic_ceiling.ceiling(40_000, 7, [0.1], design="all_tokens")
    assert untold[0]["ratio"] < rows[0]["ratio"] - 0.01, (rows, untold)
    # Factorized: told the pairs' form it must beat the generic FwFM, which must find the pairs among 325.
    told = synthetic_ceiling.ceiling(40_000, 7, [0.05], design="pairs_factorized")
    generic = synthetic_ceiling.ceiling(40_000, 7, [0.005], design="fwfm")
    assert generic[0]["ratio"] + 0.02 < told[0]["ratio"] < 1.0, (told, generic)
    assert synthetic_ceiling.main(["--rows", "3000", "--C", "1.0", "--design", "teacher", "all_tokens", "fwfm",
                                   "--out", str(tmp_path)]) == 0
    table = (tmp_path / "synthetic_ceiling.csv").read_text()
    assert "all_tokens" in table and "fwfm" in table
