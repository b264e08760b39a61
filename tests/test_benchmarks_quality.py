"""The preprocessing and quality benchmarks run end to end (``--quick``) and write stamped, well-formed results.

Structure only: no speed or quality threshold (timings on shared CI machines are noise, a 1-epoch model on 3000
synthetic rows learns next to nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import common  # noqa: E402
import preprocess as preprocess_bench  # noqa: E402
import quality_report  # noqa: E402
import quality_suites  # noqa: E402

STAMP_KEYS = ("command", "git_commit", "utc_time", "machine", "load_average_at_start", "python", "torch", "torchrec",
              "fbgemm_gpu")


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _check_stamp(stamp: dict[str, str]) -> None:
    for key in STAMP_KEYS:
        assert stamp.get(key), key
    assert "--quick" in stamp["command"]


@pytest.fixture(scope="module")
def preprocess_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("preprocess")
    proc = _run("preprocess.py", "--quick", "--out", str(out), "--cache-dir", str(out / "cache"))
    assert "peak RSS growth" in proc.stdout
    return str(out)


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("quality")
    _run("quality.py", "--quick", "--out", str(out), "--work-dir", str(out / "work"))
    return str(out)


@pytest.mark.slow
def test_preprocess_quick_files_and_columns(preprocess_run: str) -> None:
    for name in ("preprocess.csv", "preprocess.md", "preprocess.png"):
        assert os.path.getsize(os.path.join(preprocess_run, name)) > 0, name
    with open(os.path.join(preprocess_run, "preprocess.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    stamp, rows = common.read_csv(os.path.join(preprocess_run, "preprocess.csv"))
    _check_stamp(stamp)
    assert list(rows[0]) == list(preprocess_bench.COLUMNS)
    assert [int(r["rows"]) for r in rows] == list(preprocess_bench.QUICK_ROWS)
    for r in rows:
        assert r["status"] == "ok", r
        for key in ("input_mib", "wall_s", "rows_per_s", "lib_elapsed_s", "rows_per_s_lib", "peak_rss_mib",
                    "output_mib"):
            assert float(r[key]) > 0, key
    with open(os.path.join(preprocess_run, "preprocess.md")) as f:
        text = f.read()
    assert text.startswith("<!--") and "## Results" in text and "peak RSS growth" in text
    for key in STAMP_KEYS:
        assert f"{key}: " in text, key


@pytest.mark.slow
def test_quality_quick_files_and_columns(quality_run: str) -> None:
    csv_path = os.path.join(quality_run, "quality_models.csv")
    md_path = os.path.join(quality_run, "quality_models.md")
    runs_path = os.path.join(quality_run, "quality_models_runs.jsonl")
    for path in (csv_path, md_path, runs_path):
        assert os.path.getsize(path) > 0, path
    stamp, rows = common.read_csv(csv_path)
    _check_stamp(stamp)
    assert list(rows[0]) == list(quality_report.COLUMNS)
    (row,) = rows
    assert row["status"] == "ok" and row["seeds_done"] == "1"
    for key in ("valid_auc_mean", "valid_logloss_mean", "test_auc_mean", "test_logloss_mean", "train_samples_per_s",
                "fwd_bwd_samples_per_s_b4096"):
        assert float(row[key]) > 0, key
    assert 0.0 <= float(row["valid_auc_mean"]) <= 1.0
    assert int(row["epochs_cap"]) == 1 and row["epochs_run"] == "1"
    with open(runs_path) as f:
        (run,) = [json.loads(line) for line in f]
    assert run["status"] == "ok" and "dlf_torchrec.train" in run["command"] and "training.seed=2019" in run["command"]
    with open(md_path) as f:
        text = f.read()
    assert text.startswith("<!--") and "epoch cap 1" in text and "## Command" in text
    assert "fwd+bwd samples/s @4096" in text


def test_quality_suites_are_defined() -> None:
    dlf_rows, _ = quality_suites.suite_rows("dlf", quick=False)
    labels = [r.label for r in dlf_rows]
    assert labels[:2] == ["DCNv2", "DNN"] and len(labels) == 12
    for form in ("authors", "paper"):
        full = next(r for r in dlf_rows if r.label == f"DLF {form} full")
        assert "model.naf=true" in full.overrides and f"model.form={form}" in full.overrides
        no_naf = next(r for r in dlf_rows if r.label == f"DLF {form} w/o RLI+NAF")
        # later overrides win: naf ends up false
        assert no_naf.overrides.index("model.naf=false") > no_naf.overrides.index("model.naf=true")
    models, notes = quality_suites.suite_rows("models", quick=False)
    assert not any("TF4CTR" in r.label and r.dataset == "avazu" for r in models)
    assert any("Avazu" in n for n in notes)
    tf_rows, _ = quality_suites.suite_rows("tf4ctr", quick=False)
    assert any("complex_encoder" in " ".join(r.overrides) for r in tf_rows)
    assert all(os.path.exists(os.path.join(REPO, r.config)) for r in dlf_rows + models + tf_rows)


def test_rss_growth_prefers_1m_to_5m() -> None:
    rows = [{"rows": n, "status": "ok", "peak_rss_mib": m}
            for n, m in ((100_000, 300.0), (1_000_000, 400.0), (5_000_000, 480.0))]
    a, b, growth = preprocess_bench.rss_growth(rows)
    assert (a, b) == (1_000_000, 5_000_000) and growth == pytest.approx(0.2)
    assert preprocess_bench.rss_growth(rows[:1]) is None


@pytest.mark.slow
def test_allocator_quick_files_and_columns(tmp_path: os.PathLike) -> None:
    import allocator

    proc = _run("allocator.py", "--quick", "--out", str(tmp_path))
    assert "ratio_tuned_vs_default" in proc.stdout
    for name in ("allocator.csv", "allocator.md", "allocator.png"):
        assert os.path.getsize(os.path.join(tmp_path, name)) > 0, name
    stamp, rows = common.read_csv(os.path.join(tmp_path, "allocator.csv"))
    _check_stamp(stamp)
    assert list(rows[0]) == list(allocator.COLUMNS)
    assert [r["label"] for r in rows] == [label for label, _, _ in allocator.QUICK_JOBS]
    for r in rows:
        assert r["status"] == "ok", r
        for alloc in allocator.ALLOCATORS:
            assert float(r[f"{alloc}_samples_per_s"]) > 0
            assert float(r[f"{alloc}_peak_rss_mib"]) > 0
            assert int(r[f"{alloc}_minor_faults_per_step"]) >= 0
        ratio = float(r["tuned_samples_per_s"]) / float(r["default_samples_per_s"])
        assert float(r["ratio_tuned_vs_default"]) == pytest.approx(ratio, abs=0.01)


@pytest.mark.slow
def test_flops_quick_counts_a_dlf_model(tmp_path: os.PathLike) -> None:
    import flops

    _run("flops.py", "--quick", "--out", str(tmp_path))
    stamp, rows = common.read_csv(os.path.join(tmp_path, "flops.csv"))
    _check_stamp(stamp)
    assert list(rows[0]) == list(flops.COLUMNS) and len(rows) == 1
    row = rows[0]
    assert row["status"] == "ok", row
    # Backward costs about twice the forward (two matmuls per forward matmul), so fwd+bwd is ~3x fwd.
    assert 2.5 < float(row["mflop_per_sample_fwd_bwd"]) / float(row["mflop_per_sample_fwd"]) < 3.5
    assert int(row["params"]) > 1_000_000


@pytest.mark.slow
def test_roofline_quick_accounts_for_the_flops_and_the_step_time(tmp_path: os.PathLike) -> None:
    import roofline

    proc = _run("roofline.py", "--quick", "--out", str(tmp_path))
    stamp, rows = common.read_csv(os.path.join(tmp_path, "roofline.csv"))
    _check_stamp(stamp)
    assert [r["model"] for r in rows] == ["dnn", "dcnv2"] and list(rows[0]) == list(roofline.COLUMNS)
    for r in rows:
        # every matmul of DNN and DCNv2 is an nn.Linear: the hooked shapes explain the counted FLOPs exactly
        assert abs(float(r["linear_share"]) - 1.0) < 0.01, r
        achieved = float(r["samples_per_s"]) * float(r["mflop_per_sample"]) / 1e3
        assert abs(achieved - float(r["achieved_gflops"])) <= 0.01 * achieved + 0.1, r
        shares = [float(r[k]) for k in ("gemm_pct", "embedding_pct", "dense_optimizer_pct", "other_ops_pct",
                                        "untracked_pct")]
        assert min(shares) >= 0 and abs(sum(shares) - 100) < 1.0 and float(r["gemm_pct"]) > 0, r
    assert "square GEMM GFLOP/s" in proc.stdout
    assert os.path.getsize(os.path.join(tmp_path, "roofline.png")) > 5000
    assert "## This machine" in open(os.path.join(tmp_path, "roofline.md")).read()
