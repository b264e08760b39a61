"""Preprocessing user data without glue: csv label rules, csv numeric columns, header variants of the built-in
formats (Criteo as a header CSV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_preprocess import cfg_for, read_all

from dlf_torchrec.data import parse as P
from dlf_torchrec.data.fingerprint import stale_reasons
from dlf_torchrec.data.meta import VOCAB_FILE
from dlf_torchrec.data.preprocess import DataError, main, preprocess
from dlf_torchrec.data.reading import BadRowError


def test_label_rules_count_rows_outside_the_rule_by_reason(tmp_path: Path) -> None:
    rated = tmp_path / "ratings.csv"
    rated.write_text("user,rating\n" + "".join(f"u{i % 4},{i % 5 + 0.5}\n" for i in range(200))
                     + "u1,\nu2,five\n")
    rule = {"header": True, "label": {"column": "rating", "rule": ">= 4"},
            "columns": [{"name": "user"}, {"name": "rating"}]}
    meta = preprocess(cfg_for(tmp_path, rated, format="csv", schema=rule, split=[1.0, 0.0, 0.0],
                              max_bad_fraction=0.05))
    labels = read_all(str(tmp_path / "out"))["train"][0]
    assert len(labels) == 200 and labels.sum() == 40  # 4.5 is the only value >= 4: 1 row in 5
    assert meta.rejected_by_reason == {P.LABEL_NOT_NUMBER: 2}
    assert meta.rejected_examples == [f"{rated}:202: {P.LABEL_NOT_NUMBER} (rating=b'')",
                                      f"{rated}:203: {P.LABEL_NOT_NUMBER} (rating=b'five')"]
    answers = tmp_path / "answers.csv"
    answers.write_text("".join(f"u{i % 3};{('yes', 'no', 'no')[i % 3]}\n" for i in range(99)) + "u0;maybe\n")
    mapped = {"delimiter": ";", "label": {"column": "a", "map": {"yes": 1, "no": 0}},
              "columns": [{"name": "u"}, {"name": "a"}]}
    kw = {"format": "csv", "schema": mapped, "split": [1.0, 0.0, 0.0], "output_dir": str(tmp_path / "m")}
    with pytest.raises(BadRowError, match=rf"^{answers}:100: {P.LABEL_NOT_IN_MAP} \(a=b'maybe'\)$"):
        preprocess(cfg_for(tmp_path, answers, bad_rows="fail", **kw))
    cfg = cfg_for(tmp_path, answers, max_bad_fraction=0.05, **kw)
    meta = preprocess(cfg)
    assert meta.rejected_by_reason == {P.LABEL_NOT_IN_MAP: 1} and meta.splits["train"].positives == 33
    numbered = cfg_for(tmp_path, answers, max_bad_fraction=0.05, **{**kw, "output_dir": str(tmp_path / "n"), "schema": {
        **mapped, "label": {"column": "a", "map": {"yes": 1, "no": 0, 7: 0}}}})
    preprocess(numbered)  # integer map keys: the dataset is reused, not preprocessed again on every run
    assert stale_reasons(numbered, lambda path, key: path) == []
    with pytest.raises(DataError, match=rf"1 of 100 rows rejected .*1 x {P.LABEL_NOT_IN_MAP}"):
        preprocess(cfg_for(tmp_path, answers, max_bad_fraction=0.005, **kw))


def test_csv_numeric_columns_are_dense_unless_bucketized(tmp_path: Path) -> None:
    train = tmp_path / "t.csv"
    train.write_text("".join(f"u{i % 3},{i % 2},{i * 7}.5\n" for i in range(30)))
    schema = {"label": "y", "columns": [{"name": "user"}, {"name": "y"}, {"name": "price", "type": "numeric"}]}
    kw = {"format": "csv", "schema": schema, "split": [1.0, 0.0, 0.0]}
    assert cfg_for(tmp_path, train, **kw).numeric == "dense" and cfg_for(tmp_path, train).numeric == "bucketize"
    meta = preprocess(cfg_for(tmp_path, train, **kw))
    assert meta.dense == ["price"] and [c.name for c in meta.categorical] == ["user"]
    assert meta.dataset_config["numeric"] == "dense"
    dense = read_all(str(tmp_path / "out"))["train"][2][:, 0]
    np.testing.assert_allclose(dense, np.log1p(np.arange(30) * 7 + 0.5).astype(np.float32), rtol=1e-6)
    meta = preprocess(cfg_for(tmp_path, train, numeric="bucketize", output_dir=str(tmp_path / "b"), **kw))
    assert meta.dense == [] and [c.name for c in meta.categorical] == ["price", "user"]


def _criteo_rows(n: int) -> list[list[str]]:
    return [[str(i % 2), *(str(i * j - 3) if j % 4 else "" for j in range(13)), *(f"{i * 31 + j:x}" for j in range(26))]
            for i in range(n)]


def test_criteo_header_variants_read_as_the_kaggle_tsv(tmp_path: Path) -> None:
    names = ["label", *(f"I{j}" for j in range(1, 14)), *(f"C{j}" for j in range(1, 27))]
    rows = _criteo_rows(60)
    (tmp_path / "plain.tsv").write_text("".join("\t".join(r) + "\n" for r in rows))
    (tmp_path / "header.tsv").write_text("\t".join(names) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    order = [*range(14, 40), *range(13, 0, -1), 0]  # a header CSV in another column order, ints as floats
    as_float = [[f"{v}.0" if 1 <= k <= 13 and v else v for k, v in enumerate(r)] for r in rows]
    (tmp_path / "floats.csv").write_text(",".join(names[k] for k in order) + "\n" + "".join(
        ",".join(r[k] for k in order) + "\n" for r in as_float))
    got = {}
    for name in ("plain.tsv", "header.tsv", "floats.csv"):
        out = tmp_path / name.replace(".", "_")
        meta = preprocess(cfg_for(tmp_path, tmp_path / name, split=[1.0, 0.0, 0.0], output_dir=str(out)))
        assert meta.rows_read == 60 and meta.rows_rejected == 0, name
        got[name] = (read_all(str(out)), (out / VOCAB_FILE).read_text())
    for name in ("header.tsv", "floats.csv"):
        assert got[name][1] == got["plain.tsv"][1]
        for want, have in zip(got["plain.tsv"][0]["train"], got[name][0]["train"], strict=True):
            np.testing.assert_array_equal(have, want)
    other = tmp_path / "other.csv"  # a header CSV with its own names (FuxiCTR's clk, or lower case)
    other.write_text(",".join(["clk", *(n.lower() for n in names[1:])]) + "\n" + "".join(
        ",".join(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"the first line is a header \(clk, i1, i2, \.\.\.\) with other column names; "
                                        r"format criteo reads .* format: csv and a dataset\.schema") as err:
        preprocess(cfg_for(tmp_path, other, output_dir=str(tmp_path / "o")))
    assert str(err.value).startswith(str(other)) and "\n" not in str(err.value)
    assert not (tmp_path / "o").exists()
    yaml_path = tmp_path / "exp.yaml"
    yaml_path.write_text(f"dataset:\n  format: criteo\n  train: {other}\n  output_dir: {tmp_path / 'o'}\n")
    assert main(["--config", str(yaml_path)]) == 1  # never exit 0 with nothing written
