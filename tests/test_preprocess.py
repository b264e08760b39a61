"""Preprocessing: bad-row policies and accounting, vocab/OOV rules, numeric handling, splits, gzip, real samples."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from dlf_torchrec.config import DatasetConfig
from dlf_torchrec.data import parse as P
from dlf_torchrec.data.features import bucketize, dense_transform
from dlf_torchrec.data.meta import META_FILE, VOCAB_FILE, DatasetMeta
from dlf_torchrec.data.preprocess import DataError, check_validation_split, ensure_preprocessed, main, preprocess
from dlf_torchrec.data.reading import BadRowError
from dlf_torchrec.data.shards import open_split
from dlf_torchrec.data.synthetic import generate_criteo_tsv


def criteo(label: str = "1", ints: list[str] | None = None, cats: list[str] | None = None) -> str:
    ints = ints if ints is not None else ["1"] * 13
    cats = cats if cats is not None else ["0000000a"] * 26
    return "\t".join([label, *ints, *cats])


def cfg_for(tmp_path: Path, train: Path, **kw) -> DatasetConfig:
    base = {"name": "t", "format": "criteo", "train": str(train), "output_dir": str(tmp_path / "out"),
            "progress": False}
    base.update(kw)
    return DatasetConfig(**base)


def read_all(out: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    meta = DatasetMeta.load(out)
    arrays = {s: open_split(out, s, meta) for s in meta.splits}
    return {s: (np.array(a.labels), np.array(a.sparse), np.array(a.dense)) for s, a in arrays.items()}


# ----------------------------------------------------------------------------------------- bad rows

PLANTED = {  # 1-based line number -> reason
    3: P.BLANK,
    5: P.FIELD_COUNT,
    8: P.NON_INT,
    9: P.NON_HEX,
    12: P.BAD_LABEL,
    13: P.FIELD_COUNT,
    20: P.NON_INT,
}


def planted_file(path: Path, n: int = 30) -> Path:
    lines = []
    for i in range(1, n + 1):
        r = PLANTED.get(i)
        if r == P.BLANK:
            lines.append("")
        elif r == P.FIELD_COUNT:
            lines.append(criteo()[: -9] if i == 5 else criteo() + "\tx")
        elif r == P.NON_INT:
            lines.append(criteo(ints=["1"] * 5 + ["abc"] + ["1"] * 7))
        elif r == P.NON_HEX:
            lines.append(criteo(cats=["0000000a"] * 3 + ["nothex!!"] + ["0000000a"] * 22))
        elif r == P.BAD_LABEL:
            lines.append(criteo(label="yes"))
        else:
            lines.append(criteo(label=str(i % 2), ints=[str(i)] * 13, cats=[f"{i % 4:08x}"] * 26))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_skip_policy_counts_reasons_and_lines(tmp_path: Path) -> None:
    train = planted_file(tmp_path / "bad.tsv")
    meta = preprocess(cfg_for(tmp_path, train, bad_rows="skip", chunk_rows=7, max_bad_fraction=1.0))
    assert meta.rows_read == 30
    assert meta.rows_rejected == len(PLANTED)
    assert meta.rows_written == 30 - len(PLANTED) == sum(s.rows for s in meta.splits.values())
    assert meta.rows_read == meta.rows_written + meta.rows_rejected
    assert meta.rejected_by_reason == {P.BLANK: 1, P.FIELD_COUNT: 2, P.NON_INT: 2, P.NON_HEX: 1, P.BAD_LABEL: 1}
    seen = {}
    for ex in meta.rejected_examples:
        file, line, rest = ex.split(":", 2)
        assert file == str(train)
        seen[int(line)] = rest.strip()
    assert sorted(seen) == sorted(PLANTED)
    for line, r in PLANTED.items():
        assert seen[line].startswith(r)
    assert "I6" in seen[8] and "C4" in seen[9]
    saved = json.loads((tmp_path / "out" / META_FILE).read_text())
    assert saved["rows_rejected"] == len(PLANTED)


def test_fail_policy_names_file_and_line(tmp_path: Path) -> None:
    train = planted_file(tmp_path / "bad.tsv")
    with pytest.raises(BadRowError, match=rf"{train}:3: {P.BLANK}"):
        preprocess(cfg_for(tmp_path, train, bad_rows="fail"))
    assert not (tmp_path / "out" / META_FILE).exists()
    assert issubclass(BadRowError, ValueError)


def test_fail_policy_in_valid_file_and_meta_absent(tmp_path: Path) -> None:
    train = tmp_path / "train.tsv"
    train.write_text("\n".join(criteo() for _ in range(5)) + "\n")
    valid = tmp_path / "valid.tsv"
    valid.write_text(criteo() + "\n" + criteo(label="7") + "\n")
    cfg = cfg_for(tmp_path, train, valid=str(valid), bad_rows="fail")
    preprocess(dataclasses.replace(cfg, bad_rows="skip", max_bad_fraction=1.0))
    assert (tmp_path / "out" / META_FILE).exists()
    with pytest.raises(BadRowError, match=rf"{valid}:2: {P.BAD_LABEL}"):
        preprocess(cfg)
    assert not (tmp_path / "out" / META_FILE).exists()  # a failed re-run never leaves a complete-looking dataset


def test_missing_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        preprocess(cfg_for(tmp_path, tmp_path / "nope.tsv"))
    train = planted_file(tmp_path / "ok.tsv")
    with pytest.raises(FileNotFoundError, match="dataset.valid.*missing_valid"):
        preprocess(cfg_for(tmp_path, train, valid=str(tmp_path / "missing_valid")))


# ----------------------------------------------------------------------------------------- no empty datasets

CSV_SCHEMA = {"header": True, "label": "y", "columns": [{"name": "user", "type": "categorical"},
                                                         {"name": "y", "type": "label"}]}


def _good_rows(n: int) -> str:
    return "".join(criteo(label=str(i % 2), cats=[f"{i % 5:08x}"] * 26) + "\n" for i in range(n))


@pytest.mark.parametrize(("case", "message"), [
    ("empty", "no data rows"),
    ("header_only", "no data rows"),
    ("wrong_delimiter", r"the first line splits into 40 ','-separated columns; format criteo reads 40 '\\t'-separated "
                        r"columns named C1, C10, C11, \.\.\.; read this file with format: csv and a dataset\.schema"),
    ("wrong_rows", r"all 40 rows rejected, 0 written .*top reasons: 40 x wrong field count; e\.g\. .*:1: "),
    ("too_many_bad", r"3 of 100 rows rejected \(3\.00%\), over dataset\.max_bad_fraction=0\.01; "
                     r"top reasons: 2 x bad label, 1 x blank line"),
    ("empty_valid", "valid.tsv: no data rows"),
])
def test_no_usable_rows_or_too_many_bad_ones_fail_naming_the_file(tmp_path: Path, case: str, message: str) -> None:
    train, kw = tmp_path / "train.tsv", {}
    if case == "empty":
        train.write_text("")
    elif case == "header_only":
        train = tmp_path / "t.csv"
        train.write_text("user,y\n")
        kw = {"format": "csv", "schema": CSV_SCHEMA}
    elif case == "wrong_delimiter":  # a comma-separated file read as criteo (tab-separated)
        train.write_text(_good_rows(40).replace("\t", ","))
    elif case == "wrong_rows":  # no delimiter the format could read
        train.write_text(_good_rows(40).replace("\t", " "))
    elif case == "too_many_bad":
        lines = _good_rows(97).splitlines()
        train.write_text("\n".join([*lines[:10], criteo(label="yes"), "", criteo(label="7"), *lines[10:]]) + "\n")
    else:
        train.write_text(_good_rows(50))
        (tmp_path / "valid.tsv").write_text("")
        kw = {"valid": str(tmp_path / "valid.tsv")}
    with pytest.raises(DataError, match=message) as err:
        preprocess(cfg_for(tmp_path, train, **kw))
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)  # one line naming the file
    assert not (tmp_path / "out" / META_FILE).exists()
    if case == "too_many_bad":  # allowed explicitly
        assert preprocess(cfg_for(tmp_path, train, max_bad_fraction=0.05)).rows_rejected == 3


def test_cli_reports_a_data_error_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = tmp_path / "train.tsv"
    train.write_text("")
    yaml_path = tmp_path / "exp.yaml"
    yaml_path.write_text(f"dataset:\n  format: criteo\n  train: {train}\n  output_dir: {tmp_path / 'o'}\n")
    assert main(["--config", str(yaml_path)]) == 1
    assert capsys.readouterr().err == f"preprocess: error: {train}: no data rows (empty file, or a header only)\n"


@pytest.mark.parametrize("labels", ["0", "1", None])
def test_one_class_or_empty_validation_split_is_a_data_error(tmp_path: Path, labels: str | None) -> None:
    train = tmp_path / "train.tsv"
    train.write_text(_good_rows(30))
    valid = tmp_path / "valid.tsv"
    valid.write_text("".join(criteo(label=labels) + "\n" for _ in range(5)) if labels else _good_rows(4))
    cfg = cfg_for(tmp_path, train, valid=str(valid))
    meta = preprocess(cfg)
    assert meta.splits["valid"].positives == (5 if labels == "1" else 0 if labels else 2)
    if labels is None:
        check_validation_split(meta, cfg)  # both classes: fine
        return
    with pytest.raises(DataError, match=rf"{valid}: the validation split has one class only \(5 rows, all label "
                                        rf"{labels}\)"):
        check_validation_split(meta, cfg)


# ------------------------------------------------------------------------------------------ stale data


def test_changed_inputs_or_config_preprocess_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """meta.json knows its inputs: another train file, an edited one, or another dataset key is preprocessed again
    (never the old data silently reused); an unchanged config and input is not redone."""
    first, second = tmp_path / "a.tsv", tmp_path / "b.tsv"
    first.write_text(_good_rows(40))
    second.write_text(_good_rows(60))
    cfg = cfg_for(tmp_path, first)
    meta_path = tmp_path / "out" / META_FILE

    def rows(c: DatasetConfig) -> int:
        return DatasetMeta.load(ensure_preprocessed(c)).rows_read

    assert rows(cfg) == 40
    stamp = meta_path.stat().st_mtime_ns
    assert rows(dataclasses.replace(cfg, progress=True, chunk_rows=7)) == 40  # keys that do not change the data
    assert meta_path.stat().st_mtime_ns == stamp and "stale" not in capsys.readouterr().err
    assert rows(dataclasses.replace(cfg, train=str(second))) == 60  # the case: another dataset.train
    assert f"dataset.train {second}: path, size, mtime_ns, sha256_first_last_mib changed" in capsys.readouterr().err
    with second.open("a") as f:  # the same file, edited
        f.write(_good_rows(5))
    assert rows(dataclasses.replace(cfg, train=str(second))) == 65
    assert rows(dataclasses.replace(cfg, train=str(second), min_count=2)) == 65
    assert "dataset.min_count was 1, now 2" in capsys.readouterr().err
    assert DatasetMeta.load(str(tmp_path / "out")).dataset_config["min_count"] == 2


# --------------------------------------------------------------------------------------- vocab / OOV


def test_vocab_min_count_oov_missing_unseen(tmp_path: Path) -> None:
    # C1: "000000aa" x3, "000000bb" x2, "000000cc" x1, one missing. min_count 2 keeps aa, bb.
    c1_train = ["000000aa"] * 3 + ["000000bb"] * 2 + ["000000cc", ""]
    train = tmp_path / "train.tsv"
    train.write_text("".join(criteo(label=str(i % 2), ints=[str(i)] + [""] * 12,
                                    cats=[c] + ["00000001"] * 25) + "\n" for i, c in enumerate(c1_train)))
    valid = tmp_path / "valid.tsv"
    valid.write_text(criteo(cats=["000000bb"] + ["00000001"] * 25) + "\n"
                     + criteo(cats=["000000dd"] + [""] * 25) + "\n")
    test = tmp_path / "test.tsv"
    test.write_text(criteo(cats=["000000cc"] + ["00000002"] * 25) + "\n")
    meta = preprocess(cfg_for(tmp_path, train, valid=str(valid), test=str(test), min_count=2))
    assert list(meta.splits) == ["train", "valid", "test"]
    names = [c.name for c in meta.categorical]
    assert names[:13] == [f"I{i}" for i in range(1, 14)] and names[13:] == [f"C{i}" for i in range(1, 27)]
    vocab = json.loads((tmp_path / "out" / VOCAB_FILE).read_text())
    assert vocab["C1"] == ["000000aa", "000000bb"]  # sorted ascending, ids 1..K
    c1 = names.index("C1")
    assert meta.categorical[c1].vocab_size == 4  # PAD + 2 + OOV
    oov = 3
    data = read_all(str(tmp_path / "out"))
    assert data["train"][1][:, c1].tolist() == [1, 1, 1, 2, 2, oov, oov]  # rare and missing -> OOV
    assert data["valid"][1][:, c1].tolist() == [2, oov]  # unseen -> OOV
    assert data["test"][1][:, c1].tolist() == [oov]  # rare in train -> OOV
    assert (data["valid"][1][1, 14:] == [f.vocab_size - 1 for f in meta.categorical[14:]]).all()  # missing -> OOV
    # I1 bucketised: train values 0..6 -> buckets 0,1,2,1,1,2,3 (0 = NA -> OOV); min_count 2 keeps 1, 2.
    i1 = names.index("I1")
    assert vocab["I1"] == ["1", "2"]
    assert data["train"][1][:, i1].tolist() == [3, 1, 2, 1, 1, 2, 3]
    for split, (labels, sparse, dense) in data.items():
        assert sparse.min() >= 1, f"{split}: PAD emitted"
        assert (sparse <= np.array([f.vocab_size - 1 for f in meta.categorical])).all()
        assert dense.shape == (len(labels), 0)
    assert data["train"][0].tolist() == [0, 1, 0, 1, 0, 1, 0]


def test_bucketize_and_dense_transform() -> None:
    v = np.array([np.nan, 0, 1, 2, 3, -1, -5, 100, 1e15])
    assert bucketize(v).tolist() == [0, 0, 1, 2, 1, -1, -5, 21, int(np.floor(np.log(1e15) ** 2))]
    d = dense_transform(v)
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, [0, 0, np.log(2), np.log(3), np.log(4), -1, -5, np.log(101), np.log1p(1e15)],
                               rtol=1e-6)


def test_numeric_dense_mode(tmp_path: Path) -> None:
    train = planted_file(tmp_path / "bad.tsv")
    meta = preprocess(cfg_for(tmp_path, train, numeric="dense", split=[1.0, 0.0, 0.0], max_bad_fraction=1.0))
    assert meta.dense == [f"I{i}" for i in range(1, 14)] and len(meta.categorical) == 26
    assert list(meta.splits) == ["train"]
    labels, sparse, dense = read_all(str(tmp_path / "out"))["train"]
    assert dense.shape == (23, 13) and dense.dtype == np.float32
    np.testing.assert_allclose(dense[0], np.log1p(1.0), rtol=1e-6)  # line 1 has I* = 1


# ----------------------------------------------------------------------------------- splits / gzip / pool


def test_random_split_deterministic_and_gzip_identical(tmp_path: Path) -> None:
    raw = tmp_path / "syn.tsv"
    generate_criteo_tsv(raw, 3000, seed=3)
    gz = tmp_path / "syn.tsv.gz"
    gz.write_bytes(gzip.compress(raw.read_bytes()))
    a = preprocess(cfg_for(tmp_path, raw, output_dir=str(tmp_path / "a"), chunk_rows=500, min_count=2))
    b = preprocess(cfg_for(tmp_path, gz, output_dir=str(tmp_path / "b"), chunk_rows=500, min_count=2))
    c = preprocess(cfg_for(tmp_path, raw, output_dir=str(tmp_path / "c"), chunk_rows=500, min_count=2),
                   workers=2)
    assert a.splits == b.splits == c.splits
    assert abs(a.splits["train"].rows / 3000 - 0.8) < 0.05 and a.splits["valid"].rows > 200
    for other in ("b", "c"):
        for f in ("vocab.json", "train/sparse.bin", "valid/labels.bin", "test/sparse.bin"):
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / other / f).read_bytes(), (other, f)
    d = preprocess(cfg_for(tmp_path, raw, output_dir=str(tmp_path / "d"), chunk_rows=500, split_seed=99))
    assert d.splits != a.splits


def test_without_pandas_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dlf_torchrec.data.features as features

    raw = tmp_path / "syn.tsv"
    generate_criteo_tsv(raw, 1500, seed=4)
    preprocess(cfg_for(tmp_path, raw, output_dir=str(tmp_path / "a"), chunk_rows=400, min_count=2))
    monkeypatch.setattr(features, "_pd", None)
    preprocess(cfg_for(tmp_path, raw, output_dir=str(tmp_path / "b"), chunk_rows=400, min_count=2))
    for f in ("vocab.json", "train/sparse.bin", "valid/sparse.bin", "test/labels.bin"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_ensure_preprocessed_synthetic_and_cli(tmp_path: Path) -> None:
    cfg = DatasetConfig(output_dir=str(tmp_path / "syn"), synthetic_rows=2000, progress=False)
    out = ensure_preprocessed(cfg)
    meta_path = Path(out) / META_FILE
    stamp = meta_path.stat().st_mtime_ns
    assert (Path(out) / "raw" / "train.tsv").exists()
    meta = DatasetMeta.load(out)
    assert meta.rows_read == 2000 and meta.rows_rejected == 0 and meta.source_format == "synthetic"
    assert ensure_preprocessed(cfg) == out and meta_path.stat().st_mtime_ns == stamp  # not redone
    # CLI on a criteo config with overrides
    train = planted_file(tmp_path / "bad.tsv")
    yaml_path = tmp_path / "exp.yaml"
    yaml_path.write_text(f"dataset:\n  name: cli\n  format: criteo\n  train: {train}\n"
                         f"  output_dir: {tmp_path / 'cli'}\n  progress: false\n  max_bad_fraction: 1.0\n")
    assert main(["--config", str(yaml_path), "dataset.min_count=2", "chunk_rows=4"]) == 0
    cli = DatasetMeta.load(str(tmp_path / "cli"))
    assert cli.dataset_config["min_count"] == 2 and cli.dataset_config["chunk_rows"] == 4
    assert cli.rows_rejected == len(PLANTED)


def test_csv_format_end_to_end(tmp_path: Path) -> None:
    train = tmp_path / "t.csv"
    train.write_text("user,y,price,junk\n" + "".join(f"u{i % 3},{i % 2},{i}.5,zz\n" for i in range(20))
                     + "u1,maybe,1,zz\n")
    cfg = cfg_for(tmp_path, train, format="csv", numeric="dense", split=[0.5, 0.5, 0.0], max_bad_fraction=0.05,
                  schema={"header": True, "label": "y", "columns": [
                      {"name": "user", "type": "categorical"}, {"name": "y", "type": "label"},
                      {"name": "price", "type": "numeric"}, {"name": "junk", "type": "skip"}]})
    meta = preprocess(cfg)
    assert [c.name for c in meta.categorical] == ["user"] and meta.dense == ["price"]
    assert meta.categorical[0].vocab_size == 5
    assert meta.rows_read == 21 and meta.rows_rejected == 1
    assert meta.rejected_examples[0].startswith(f"{train}:22: {P.BAD_LABEL}")


HDR_SCHEMA = {"header": True, "label": "y", "columns": [
    {"name": "user", "type": "categorical"}, {"name": "y", "type": "label"}, {"name": "price", "type": "numeric"},
    {"name": "qty", "type": "numeric"}, {"name": "item", "type": "categorical"}, {"name": "junk", "type": "skip"}]}


def _csv_with_columns(path: Path, names: list[str]) -> Path:
    """40 rows of the same data, columns written in ``names`` order under a header."""
    rows = [{"user": f"u{i % 3}", "y": str(i % 2), "price": f"{i}.5", "qty": str(100 - i), "item": f"i{i % 4}",
             "junk": "zz"} for i in range(40)]
    path.write_text(",".join(names) + "\n" + "".join(",".join(r[n] for n in names) + "\n" for r in rows))
    return path


def _preprocessed(tmp_path: Path, train: Path, out: str, **kw) -> tuple[dict, str]:
    cfg = cfg_for(tmp_path, train, format="csv", schema=HDR_SCHEMA, output_dir=str(tmp_path / out), **kw)
    preprocess(cfg)
    return read_all(cfg.output_dir), (tmp_path / out / VOCAB_FILE).read_text()


def test_csv_header_columns_are_matched_by_name(tmp_path: Path) -> None:
    schema_order = ["user", "y", "price", "qty", "item", "junk"]
    permuted = ["qty", "item", "junk", "y", "price", "user"]
    # One split: a random split hashes each row's bytes, which differ between the two layouts.
    want, want_vocab = _preprocessed(tmp_path, _csv_with_columns(tmp_path / "a.csv", schema_order), "a",
                                     numeric="dense", split=[1.0, 0.0, 0.0])
    got, got_vocab = _preprocessed(tmp_path, _csv_with_columns(tmp_path / "b.csv", permuted), "b", numeric="dense",
                                   split=[1.0, 0.0, 0.0])
    assert got_vocab == want_vocab and set(got) == set(want) and "train" in want
    for split, arrays in want.items():
        for w, g in zip(arrays, got[split], strict=True):
            np.testing.assert_array_equal(g, w)
    assert len(want["train"][0]) > 0 and want["train"][2].shape[1] == 2  # price and qty, dense


@pytest.mark.parametrize(("names", "message"), [
    (["user", "y", "price", "item", "junk"], r"missing \['qty'\]"),
    (["user", "y", "price", "qty", "item", "junk", "extra"], r"unexpected \['extra'\]"),
    (["user", "y", "price", "qty", "item", "user"], r"missing \['junk'\]; repeated \['user'\]"),
])
def test_csv_header_mismatch_fails_naming_the_columns(tmp_path: Path, names: list[str], message: str) -> None:
    train = _csv_with_columns(tmp_path / "train.csv", ["user", "y", "price", "qty", "item", "junk"])
    valid = tmp_path / "valid.csv"
    valid.write_text(",".join(names) + "\n" + "u1,1,2.5,3,i1,zz\n")
    with pytest.raises(DataError, match=message) as err:
        preprocess(cfg_for(tmp_path, train, format="csv", schema=HDR_SCHEMA, valid=str(valid)))
    text = str(err.value)
    assert text.startswith(f"{valid}: header columns do not match the schema") and "\n" not in text
    assert "expected (in any order) ['user', 'y', 'price', 'qty', 'item', 'junk']" in text
    assert not (tmp_path / "out").exists()  # raised before anything was written


def test_avazu_header_in_another_order_takes_the_row_parser(shared_data: Path, tmp_path: Path) -> None:
    lines = (shared_data / "avazu_kaggle_head10k" / "train").read_bytes().splitlines()[:2001]
    names = lines[0].split(b",")
    # "id,click" first keeps the header detected, "hour" stays, C1..C21 reversed: rows the fast parser would accept
    order = [0, 1, 2, *range(23, 2, -1)]
    permuted = tmp_path / "permuted.csv"
    permuted.write_bytes(b"".join(b",".join(line.split(b",")[i] for i in order) + b"\n" for line in lines))
    assert permuted.read_bytes().split(b"\n")[0] == b",".join(names[i] for i in order)
    (tmp_path / "plain.csv").write_bytes(b"\n".join(lines) + b"\n")
    one = [1.0, 0.0, 0.0]  # one split: a random split hashes each row's bytes, which differ between the layouts
    want = preprocess(cfg_for(tmp_path, tmp_path / "plain.csv", format="avazu", output_dir=str(tmp_path / "p"),
                              split=one))
    got = preprocess(cfg_for(tmp_path, permuted, format="avazu", output_dir=str(tmp_path / "q"), split=one))
    assert got.rows_rejected == want.rows_rejected == 0 and got.categorical == want.categorical
    for split, arrays in read_all(str(tmp_path / "p")).items():
        for w, g in zip(arrays, read_all(str(tmp_path / "q"))[split], strict=True):
            np.testing.assert_array_equal(g, w)


# ------------------------------------------------------------------------------------------ real data


def test_real_criteo_head(shared_data: Path, tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, shared_data / "criteo_kaggle_head10k" / "sample.train", min_count=2)
    meta = preprocess(cfg)
    assert meta.rows_read == meta.rows_written == 10_000
    assert set(meta.splits) == {"train", "valid", "test"}
    assert 7700 < meta.splits["train"].rows < 8300 and 800 < meta.splits["valid"].rows < 1200
    sizes = {c.name: c.vocab_size for c in meta.categorical}
    assert len(sizes) == 39 and all(3 <= v < 10_000 for v in sizes.values())
    labels = np.concatenate([a[0] for a in read_all(cfg.output_dir).values()])
    assert int(labels.sum()) == 2182


def test_real_avazu_head(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "avazu_kaggle_head10k"
    meta = preprocess(cfg_for(tmp_path, d / "train", format="avazu", test=str(d / "test"), min_count=2))
    assert meta.splits["train"].rows == 8999 and meta.splits["test"].rows == 1000 and meta.rows_rejected == 0
    sizes = {c.name: c.vocab_size for c in meta.categorical}
    assert len(sizes) == 24 and "id" not in sizes
    assert sizes["weekend"] == 3 and sizes["weekday"] == 3  # the head covers one day (2014-10-21, Tuesday)
    assert 3 <= sizes["hour"] <= 26 and sizes["device_ip"] > 100
    labels = read_all(str(tmp_path / "out"))["train"][0]
    assert int(labels.sum()) == 1563


def test_real_frappe(shared_data: Path, tmp_path: Path) -> None:
    meta = preprocess(cfg_for(tmp_path, shared_data / "frappe_derived" / "frappe.train.reconstructed.libfm",
                              format="libfm", valid=str(shared_data / "frappe_nfm" / "frappe.validation.libfm")))
    assert len(meta.categorical) == 10 and meta.dense == []
    assert meta.splits["train"].rows == 202_027 and meta.splits["valid"].rows == 57_722
    total = sum(c.vocab_size - 2 for c in meta.categorical)
    assert 5000 < total < 5400  # ~5382 global ids, a few unseen in train
    labels = read_all(str(tmp_path / "out"))["train"][0]
    assert int(labels.sum()) == 67_604
    assert os.path.getsize(tmp_path / "out" / "train" / "sparse.bin") == 202_027 * 10 * 4
