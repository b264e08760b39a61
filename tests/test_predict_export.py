"""Scoring raw files and exporting a trained run: equal to the trainer's own predictions, unlabelled input, bad rows,
stdin/stdout, and the self-contained exported model."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_metrics import sklearn_gauc

from dlf_torchrec import export, oov, predict
from dlf_torchrec import run as runs
from dlf_torchrec.data import rawinput
from dlf_torchrec.data.formats.avazu import avazu_schema
from dlf_torchrec.data.formats.criteo import criteo_schema
from dlf_torchrec.data.formats.libfm import libfm_schema
from dlf_torchrec.data.parse import parse_chunk
from dlf_torchrec.data.shards import open_split
from dlf_torchrec.data.splits import line_uniform
from dlf_torchrec.training.metrics import compute_metrics

REPO = Path(__file__).resolve().parent.parent
CONFIG = "configs/criteo/dcnv2.yaml"


@pytest.fixture(scope="module")
def criteo(shared_data: Path) -> Path:
    return shared_data / "criteo_kaggle_head10k"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, criteo: Path) -> Path:
    """A tiny DCNv2 run (1 epoch, one 16-unit layer) on the Criteo head, trained through the CLI."""
    tmp = tmp_path_factory.mktemp("predict_export")
    cmd = [sys.executable, "-m", "dlf_torchrec.train", "--config", str(REPO / CONFIG),
           f"dataset.train={criteo / 'sample.train'}", f"dataset.output_dir={tmp / 'data'}",
           f"training.output_dir={tmp / 'run'}", "training.epochs=1", "model.hidden_units=[16]",
           "training.progress=false", "dataset.progress=false", "training.group_auc_field=C1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return tmp / "run"


@pytest.fixture(scope="module")
def run(run_dir: Path) -> runs.Run:
    return runs.load_run(str(run_dir))


@pytest.fixture(scope="module")
def model(run: runs.Run) -> torch.nn.Module:
    return runs.load_model(run)


@pytest.fixture(scope="module")
def test_predictions(run_dir: Path, criteo: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """predict's output lines for the unlabelled sample.test."""
    out = tmp_path_factory.mktemp("pred") / "test.pred"
    assert predict.main(["--run", str(run_dir), "--input", str(criteo / "sample.test"), "--output", str(out),
                         "--no-progress"]) == 0
    return out.read_text().splitlines()


def read_probs(path: Path) -> np.ndarray:
    return np.array([float(x) for x in path.read_text().splitlines()])


def split_of_lines(path: Path, seed: int, ratios: list[float]) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) of every line of a randomly split single-file dataset."""
    data = path.read_bytes()
    lines = data.removesuffix(b"\n").split(b"\n")
    starts = np.concatenate([[0], np.cumsum([len(line) + 1 for line in lines])[:-1]]).astype(np.int64)
    ends = starts + np.array([len(line.removesuffix(b"\r")) for line in lines], dtype=np.int64)
    u = line_uniform(seed, data, starts, ends)
    return np.minimum(np.searchsorted(np.cumsum(ratios), u, side="right"), 2)


def shard_probs(run: runs.Run, model: torch.nn.Module, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dense, sparse ids, model probabilities) of a preprocessed split, through the unsharded model."""
    arr = open_split(run.data_dir, split, run.meta)
    dense = np.asarray(arr.dense, dtype=np.float32)
    sparse = np.asarray(arr.sparse, dtype=np.int64)
    keys = [f.name for f in run.meta.categorical]
    return dense, sparse, predict.predict_proba(model, keys, dense, sparse)


@pytest.mark.slow
def test_unlabelled_criteo_test_file(test_predictions: list[str]) -> None:
    probs = np.array([float(x) for x in test_predictions])
    assert len(probs) == 10_000
    assert np.isfinite(probs).all() and (probs > 0).all() and (probs < 1).all()


@pytest.mark.slow
def test_valid_rows_match_trainer(run_dir: Path, run: runs.Run, model: torch.nn.Module, criteo: Path,
                                  tmp_path: Path) -> None:
    """predict on the raw labelled file == the trainer's model on the preprocessed valid split, row by row; the
    valid AUC/logloss recomputed from predict's output == results.json, and so is the gAUC by C1 (sklearn per
    group, weighted by group size)."""
    out = tmp_path / "train.pred"
    assert predict.main(["--run", str(run_dir), "--input", str(criteo / "sample.train"), "--output", str(out),
                         "--no-progress", "--batch-size", "3000"]) == 0
    probs = read_probs(out)
    assert len(probs) == 10_000
    ds = run.cfg.dataset
    valid = split_of_lines(criteo / "sample.train", ds.split_seed, ds.split) == 1
    labels = np.array([float(line[:1]) for line in (criteo / "sample.train").read_bytes().splitlines()])
    results = json.loads((run_dir / "results.json").read_text())
    assert valid.sum() == results["valid"]["rows"] == run.meta.splits["valid"].rows
    _, _, expected = shard_probs(run, model, "valid")
    np.testing.assert_allclose(probs[valid], expected, rtol=0, atol=1e-6)
    metrics = compute_metrics(probs[valid].astype(np.float32), labels[valid].astype(np.float32))
    assert metrics["auc"] == pytest.approx(results["valid"]["auc"], abs=1e-6)
    assert metrics["logloss"] == pytest.approx(results["valid"]["logloss"], abs=1e-6)
    c1 = np.asarray(open_split(run.data_dir, "valid", run.meta).sparse)[:, run.keys.index("C1")]
    gauc = sklearn_gauc(labels[valid], probs[valid], c1)
    assert 0.5 < gauc < 0.9 and results["valid"]["gauc"] == pytest.approx(gauc, abs=1e-6)
    assert results["valid"]["gauc"] != pytest.approx(results["valid"]["auc"], abs=1e-4)


@pytest.mark.slow
def test_group_auc_of_a_two_rank_run(criteo: Path, tmp_path: Path) -> None:
    """Evaluated on 2 ranks (each its share of the valid split, the last one padded), the gAUC by C1 in results.json
    and in the eval events equals sklearn's per-group AUC, weighted by group size, of the run's model."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "dlf_torchrec.train", "--config", str(REPO / CONFIG), f"dataset.train={criteo / 'sample.train'}",
           f"dataset.output_dir={tmp_path / 'data'}", f"training.output_dir={tmp_path / 'run'}", "training.epochs=1",
           "model.hidden_units=[16]", "training.progress=false", "dataset.progress=false",
           "training.group_auc_field=C1", "training.evaluate_test=false"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    run = runs.load_run(str(tmp_path / "run"))
    _, sparse, probs = shard_probs(run, runs.load_model(run), "valid")
    labels = np.asarray(open_split(run.data_dir, "valid", run.meta).labels)
    gauc = sklearn_gauc(labels, probs, sparse[:, run.keys.index("C1")])
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["valid"]["rows"] == len(labels) and results["valid"]["gauc"] == pytest.approx(gauc, abs=1e-6)
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["gauc"] for e in events if e["event"] == "eval"] == [pytest.approx(gauc, abs=1e-6)]
    assert "gAUC=" in proc.stdout
    bad = [c if not c.startswith("training.group_auc_field") else "training.group_auc_field=user" for c in cmd[5:]]
    bad = [c if not c.startswith("training.output_dir") else f"training.output_dir={tmp_path / 'bad'}" for c in bad]
    proc = subprocess.run([sys.executable, *bad], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 2 and "training.group_auc_field: 'user' is not a categorical field of the dataset " \
        "(fields: I1, I2," in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_export_matches_model(run_dir: Path, run: runs.Run, model: torch.nn.Module, tmp_path: Path) -> None:
    out = tmp_path / "model.pt2"
    assert export.main(["--run", str(run_dir), "--out", str(out)]) == 0
    served, extras = export.load_exported(str(out))
    assert json.loads(extras["vocab.json"]) == run.vocab
    interface = json.loads(extras["serving.json"])
    assert interface["inputs"]["sparse"]["fields"] == [f.name for f in run.meta.categorical]
    dense, sparse, expected = shard_probs(run, model, "valid")
    with torch.no_grad():
        got = served(torch.from_numpy(dense), torch.from_numpy(sparse)).numpy()
        one = served(torch.from_numpy(dense[:1]), torch.from_numpy(sparse[:1])).numpy()
    assert got.shape == (len(sparse),)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(one, expected[:1], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_torchscript_works_or_says_why(run_dir: Path, run: runs.Run, model: torch.nn.Module, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.ts"
    code = export.main(["--run", str(run_dir), "--out", str(out), "--format", "torchscript"])
    if code != 0:  # the expected outcome on torch 2.13 / torchrec 1.8 (see docs/serving.md)
        err = capsys.readouterr().err
        assert "torch.jit.script" in err and "torch.jit.trace" in err and not out.exists()
        return
    served, _ = export.load_exported(str(out))
    dense, sparse, expected = shard_probs(run, model, "valid")
    np.testing.assert_allclose(served(torch.from_numpy(dense), torch.from_numpy(sparse)).numpy(), expected,
                               rtol=0, atol=1e-6)


def bad_file(criteo: Path, tmp_path: Path) -> Path:
    """Four unlabelled rows of sample.test; line 3 has a non-integer I1."""
    lines = (criteo / "sample.test").read_bytes().splitlines(keepends=True)[:4]
    lines[2] = b"x1" + lines[2][lines[2].index(b"\t"):]
    path = tmp_path / "bad.txt"
    path.write_bytes(b"".join(lines))
    return path


@pytest.mark.slow
def test_malformed_row_fail_names_file_and_line(run_dir: Path, criteo: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path, out = bad_file(criteo, tmp_path), tmp_path / "out.txt"
    assert predict.main(["--run", str(run_dir), "--input", str(path), "--output", str(out), "--no-progress"]) == 1
    assert f"{path}:3: non-integer in int field" in capsys.readouterr().err
    assert not out.exists() and not Path(str(out) + ".tmp").exists()


@pytest.mark.slow
def test_malformed_row_skip_writes_nan(run_dir: Path, criteo: Path, tmp_path: Path, test_predictions: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path, out = bad_file(criteo, tmp_path), tmp_path / "out.txt"
    assert predict.main(["--run", str(run_dir), "--input", str(path), "--output", str(out), "--no-progress",
                         "--bad-rows", "skip"]) == 0
    got = out.read_text().splitlines()
    assert len(got) == 4 and got[2] == "nan"
    # batch-size dependent BLAS blocking moves float32 results by ~1e-7
    np.testing.assert_allclose([float(got[i]) for i in (0, 1, 3)], [float(test_predictions[i]) for i in (0, 1, 3)],
                               rtol=0, atol=1e-6)
    assert "1 malformed row(s)" in capsys.readouterr().err


@pytest.mark.slow
def test_stdin_to_stdout(run_dir: Path, criteo: Path, test_predictions: list[str]) -> None:
    head = b"".join((criteo / "sample.test").read_bytes().splitlines(keepends=True)[:200])
    cmd = [sys.executable, "-m", "dlf_torchrec.predict", "--run", str(run_dir), "--input", "-", "--output", "-",
           "--batch-size", "64"]
    proc = subprocess.run(cmd, cwd=REPO, input=head, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    got = [float(x) for x in proc.stdout.decode().splitlines()]
    np.testing.assert_allclose(got, [float(x) for x in test_predictions[:200]], rtol=0, atol=1e-6)


def test_label_detection_and_avazu_id_column() -> None:
    """Unlabelled schema variants (Criteo, Avazu with its id,hour header, libFM) and the id passthrough."""
    criteo_line = b"\t".join([b"1"] * 14 + [b"ab"] * 26) + b"\n"
    assert rawinput.input_schema(criteo_schema(), criteo_line, "auto").n_columns == 40
    assert rawinput.input_schema(criteo_schema(), criteo_line[2:], "auto").n_columns == 39
    assert rawinput.first_data_line(criteo_schema(), [b"\n", b"1\t2\n", criteo_line[2:]]) == criteo_line[2:]
    with pytest.raises(rawinput.RawInputError, match="expects 40"):
        rawinput.input_schema(criteo_schema(), b"1\t2\n", "auto")
    unlabelled = avazu_schema().without_label()
    assert unlabelled.is_header(b"id,hour,C1,banner_pos\n")
    assert rawinput.column_index(unlabelled, "id") == 0
    assert rawinput.id_values([b"123,14102100,x\n", b"\n"], unlabelled, 0) == ["123", ""]
    libfm = rawinput.input_schema(libfm_schema(3), b"a:1 b:1 c:1\n", "auto")
    assert parse_chunk(libfm, b"a:1 b:1 c:1\n").ok_idx.tolist() == [0]
    assert predict.format_rows(np.array([0.25, math.nan]), ["a", "b"]) == "a,0.25\nb,nan\n"


def unseen_tokens_file(criteo: Path, run: runs.Run, tmp_path: Path) -> Path:
    """sample.train with every categorical token (C1..C26, empty ones too) replaced by one unseen per field."""
    cats = [f"C{i}" for i in range(1, 27)]
    unseen = [f"fff{j:05x}" for j in range(len(cats))]
    assert not any(tok in run.vocab[c] for c, tok in zip(cats, unseen, strict=True))
    rows = [line.split(b"\t")[:14] + [t.encode() for t in unseen]
            for line in (criteo / "sample.train").read_bytes().splitlines()]
    path = tmp_path / "unseen.txt"
    path.write_bytes(b"".join(b"\t".join(r) + b"\n" for r in rows))
    return path


def predict_oov(run_dir: Path, path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, dict]:
    """(stderr, --oov-report JSON) of predict on ``path``."""
    report = tmp_path / f"{path.stem}.oov.json"
    assert predict.main(["--run", str(run_dir), "--input", str(path), "--output", str(tmp_path / "out.txt"),
                         "--no-progress", "--oov-report", str(report)]) == 0
    return capsys.readouterr().err, json.loads(report.read_text())


@pytest.mark.slow
def test_training_file_has_the_training_oov_rate_and_no_warning(run_dir: Path, criteo: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Rare and missing tokens are OOV in training too (min_count 10: ~38% of values): no warning for the file
    the run was trained on; its rates match the valid split's."""
    err, report = predict_oov(run_dir, criteo / "sample.train", tmp_path, capsys)
    assert "predict: out-of-vocabulary values (unseen, rare in training or missing): " in err
    assert "predict: warning:" not in err
    assert report["rows"] == 10_000 and report["warned"] == [] and report["reference"]["split"] == "valid"
    assert report["rate"] == pytest.approx(report["reference"]["rate"], abs=0.02)
    assert max(f["excess"] for f in report["fields"].values()) < 0.2


@pytest.mark.slow
def test_unseen_tokens_warn_naming_the_fields(run_dir: Path, run: runs.Run, criteo: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    err, report = predict_oov(run_dir, unseen_tokens_file(criteo, run, tmp_path), tmp_path, capsys)
    cats = {f"C{i}" for i in range(1, 27)}
    warning = next(line for line in err.splitlines() if line.startswith("predict: warning: "))
    named = set(warning.removeprefix("predict: warning: ").split(": ")[0].split(", "))
    assert named == cats and "fall back to the OOV embedding" in warning
    assert set(report["warned"]) == cats
    assert all(report["fields"][c]["rate"] == 1.0 and report["fields"][c]["excess"] == 1.0 for c in cats)
    assert all(f["excess"] < 0.2 for k, f in report["fields"].items() if k not in cats)


def test_oov_excess_over_the_reference_split() -> None:
    """A field as often OOV as in the reference split is not flagged however high its rate; without a reference
    split the rate itself is compared with the threshold."""
    sparse = np.array([[9, 1, 4], [9, 9, 4], [9, 2, 1], [3, 2, 4]])  # OOV ids 9, 9, 4: rates 0.75, 0.25, 0.75
    ref = oov.Reference("valid", 100, np.array([0.7, 0.0, 0.0]))
    with_ref, without = oov.OovCounter(["a", "b", "c"], np.array([9, 9, 4]), ref), \
        oov.OovCounter(["a", "b", "c"], np.array([9, 9, 4]), None)
    for counter in (with_ref, without):
        counter.add(sparse[:3])
        counter.add(sparse[3:])
    np.testing.assert_allclose(with_ref.excess(), [0.05 / 0.3, 0.25, 0.75])
    assert with_ref.flagged(0.5) == ["c"] and without.flagged(0.5) == ["a", "c"]
    assert with_ref.summary().endswith("75.0% (valid 0.0%), b 25.0% (valid 0.0%), a 75.0% (valid 70.0%)")
    assert with_ref.warning(0.9) is None and "c: out of vocabulary far more often" in str(with_ref.warning(0.5))
