"""Scoring through the vectorised path: every row's score equals the model's forward on the preprocessed row, bad
rows are nan in place with the reference parser's reasons, rows in = rows out, and unlabelled input (per-row parsed
before) scores the same as labelled input."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dlf_torchrec import predict
from dlf_torchrec import run as runs
from dlf_torchrec.data import parse as P
from dlf_torchrec.data.formats.criteo import criteo_schema
from dlf_torchrec.data.shards import open_split
from dlf_torchrec.data.splits import SPLITS
from dlf_torchrec.data.synthetic import generate_criteo_tsv, line_splits

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from predict_speed import make_run  # noqa: E402

ROWS = 3000
# (line number, how the generated line is broken): reasons of the reference parser; the last two are valid rows
# that the fast parser leaves to the per-row parser (a 9-digit integer, a CR line ending).
BAD = {5: "non-integer in int field", 99: "non-hex categorical id", 100: "wrong field count", 101: "blank line",
       1500: "nul byte", 2999: "wrong field count"}
SLOW_BUT_VALID = (7, 1501)


def broken(line: bytes, reason: str) -> bytes:
    f = line.split(b"\t")
    if reason == "non-integer in int field":
        f[1] = b"1.5"
    elif reason == "non-hex categorical id":
        f[20] = b"xyz"
    elif reason == "wrong field count":
        f = f[:-1]
    elif reason == "blank line":
        return b""
    elif reason == "nul byte":
        f[30] = b"ab\x00"
    return b"\t".join(f)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A generated Criteo TSV with bad rows (and missing values, which the generator draws), its preprocessed
    dataset and a run with random weights on it (no training); the same file without its label column."""
    tmp = tmp_path_factory.mktemp("predict_fast")
    lines = Path(generate_criteo_tsv(tmp / "gen.tsv", ROWS, 5)).read_bytes().split(b"\n")[:-1]
    for i, reason in BAD.items():
        lines[i] = broken(lines[i], reason)
    fields = lines[SLOW_BUT_VALID[0]].split(b"\t")
    lines[SLOW_BUT_VALID[0]] = b"\t".join([fields[0], b"123456789", *fields[2:]])
    lines[SLOW_BUT_VALID[1]] += b"\r"
    labelled = tmp / "labelled.tsv"
    labelled.write_bytes(b"\n".join(lines) + b"\n")
    unlabelled = tmp / "unlabelled.tsv"  # no final newline: the last line counts all the same
    unlabelled.write_bytes(b"\n".join(line.split(b"\t", 1)[-1] if line else line for line in lines))
    run_dir = make_run(str(tmp), str(labelled), ["dataset.max_bad_fraction=0.01"])
    return {"labelled": labelled, "unlabelled": unlabelled, "run": Path(run_dir), "tmp": tmp}


def score(files: dict[str, Path], name: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[np.ndarray, str]:
    out = files["tmp"] / f"{name}.pred"
    assert predict.main(["--run", str(files["run"]), "--input", str(files[name]), "--output", str(out),
                         "--no-progress", "--bad-rows", "skip", *args]) == 0
    return np.array([float(x) for x in out.read_text().splitlines()]), capsys.readouterr().err


def test_scores_equal_the_forward_on_the_preprocessed_rows(files: dict[str, Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    probs, err = score(files, "labelled", capsys, "--batch-size", "1024")
    assert len(probs) == ROWS  # rows in = rows out
    reference = [P._parse_rows(criteo_schema(), [line], [i])[2] for i, line in
                 enumerate(files["labelled"].read_bytes().split(b"\n")[:-1])]
    rejected = {i: r[0][1] for i, r in enumerate(reference) if r}
    assert rejected == BAD and np.flatnonzero(np.isnan(probs)).tolist() == sorted(BAD)
    assert f"{ROWS:,} rows scored ({len(BAD):,} malformed)" in err
    for reason in set(BAD.values()):
        assert f"{list(BAD.values()).count(reason):,} x {reason}" in err
    assert f"{files['labelled']}:{5 + 1}: non-integer in int field (I1=b'1.5')" in err
    # The preprocessor put each good line into one split, in file order: the model's forward on those rows.
    run = runs.load_run(str(files["run"]))
    model = runs.load_model(run)
    split, _, _ = line_splits(str(files["labelled"]), run.cfg.dataset.split, run.cfg.dataset.split_seed)
    good = ~np.isnan(probs)
    assert sum(run.meta.splits[s].rows for s in SPLITS) == good.sum()
    for k, name in enumerate(SPLITS):
        arr = open_split(run.data_dir, name, run.meta)
        dense, sparse = np.asarray(arr.dense, dtype=np.float32), np.asarray(arr.sparse, dtype=np.int64)
        expected = predict.predict_proba(model, run.keys, dense, sparse)
        np.testing.assert_allclose(probs[good & (split == k)], expected, rtol=0, atol=1e-6)
    assert probs[good].std() > 0.05  # the random weights spread the scores: equal scores mean equal rows
    with torch.no_grad():  # the pre-change computation: no_grad forward (predict_proba now runs in inference mode)
        first = open_split(run.data_dir, "train", run.meta)
        logits = model(torch.from_numpy(np.asarray(first.dense, dtype=np.float32)),
                       runs.to_kjt(torch.from_numpy(np.asarray(first.sparse, dtype=np.int64)), run.keys)).logits
    np.testing.assert_allclose(probs[good & (split == 0)], torch.sigmoid(logits).numpy(), rtol=0, atol=1e-6)


def test_unlabelled_input_scores_as_labelled(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    labelled, _ = score(files, "labelled", capsys)
    unlabelled, err = score(files, "unlabelled", capsys)
    assert len(unlabelled) == ROWS and f"{ROWS:,} rows scored ({len(BAD):,} malformed)" in err
    np.testing.assert_array_equal(np.isnan(unlabelled), np.isnan(labelled))
    np.testing.assert_allclose(unlabelled, labelled, rtol=0, atol=1e-6, equal_nan=True)
    small, _ = score(files, "unlabelled", capsys, "--batch-size", "64")  # blocks smaller than the 100 head lines
    np.testing.assert_allclose(small, labelled, rtol=0, atol=1e-6, equal_nan=True)


def test_first_bad_row_fails_with_its_line(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = files["tmp"] / "fail.pred"
    assert predict.main(["--run", str(files["run"]), "--input", str(files["unlabelled"]), "--output", str(out),
                         "--no-progress"]) == 1
    assert f"{files['unlabelled']}:6: non-integer in int field" in capsys.readouterr().err
    assert not out.exists()
