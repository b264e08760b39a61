"""Side tables joined by key (docs/data.md#side-tables), RecBole atomic files (docs/data.md#format-recbole) and the
configs in configs/examples/ on data from examples/make_data.py: join counts and OOV, errors naming file:line, the
typed header, and a trained RecBole run whose predict output equals the trainer's model (the join at scoring time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dlf_torchrec import predict
from dlf_torchrec import run as runs
from dlf_torchrec.config import DatasetConfig, load_config
from dlf_torchrec.data.features import Encoder
from dlf_torchrec.data.formats import recbole
from dlf_torchrec.data.loader import make_dataloader
from dlf_torchrec.data.meta import VOCAB_FILE
from dlf_torchrec.data.preprocess import preprocess
from dlf_torchrec.data.reading import DataError
from dlf_torchrec.data.schema import SchemaError
from dlf_torchrec.data.shards import open_split
from dlf_torchrec.data.sidetables import dataset_schema

REPO = Path(__file__).resolve().parent.parent
ROWS = "y,user,item,hist\n1,u1,i1,i2^i3\n0,u2,i2,\n1,u9,i1,i1\n0,u1,i3,i2\n1,,i2,i3\n"
USERS = "age,user,tags\n20,u1,a|b\n30,u2,\n"
SCHEMA = {"header": True, "label": "y", "columns": [
    {"name": "y"}, {"name": "user"}, {"name": "item"}, {"name": "hist", "type": "sequence", "share_embedding": "item"}]}
SIDE = {"key": "user", "columns": [{"name": "user"}, {"name": "age", "type": "numeric"},
                                   {"name": "tags", "type": "sequence", "separator": "|"}]}


def _cfg(tmp: Path, users: str = USERS, **side: object) -> DatasetConfig:
    (tmp / "rows.csv").write_text(ROWS)
    (tmp / "users.csv").write_text(users)
    table = {"file": str(tmp / "users.csv"), **SIDE, **side}
    return DatasetConfig(name="t", format="csv", train=str(tmp / "rows.csv"), valid=str(tmp / "rows.csv"),
                         schema=SCHEMA, side_tables=[table], output_dir=str(tmp / "out"), progress=False)


def test_join_counts_missing_keys_and_gives_oov_and_empty_bags(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    meta = preprocess(cfg)
    # u9 and the empty user have no row in users.csv (its columns are in another order than the schema lists them)
    assert meta.side_tables == [{"file": cfg.side_tables[0]["file"], "key": "user", "columns": ["age", "tags"],
                                 "rows": 2, "unmatched": {"train": 2, "valid": 2}}]
    assert [f.name for f in meta.categorical] == ["user", "item"] and meta.dense == ["age"]
    assert [b.name for b in meta.bags] == ["hist", "tags"]
    arr = open_split(cfg.output_dir, "train", meta)
    dense = np.asarray(arr.dense)[:, 0]
    np.testing.assert_allclose(dense, np.log1p([20, 30, 0, 20, 0]).astype(np.float32))  # missing -> 0
    offsets, values, _ = arr.bags[1]
    assert np.diff(offsets).tolist() == [2, 0, 0, 2, 0]  # u2's empty value and the unmatched rows: empty bags
    assert len(values) == 4
    # the same rows encoded as scoring encodes them (one schema builder): identical ids, and unmatched counted
    vocab = json.loads((Path(cfg.output_dir) / VOCAB_FILE).read_text())
    enc = Encoder.for_dataset(dataset_schema(cfg), cfg.numeric, meta, vocab)
    _, sparse, dense2, _, bags = enc.encode(ROWS.encode().splitlines(keepends=True)[1:])
    np.testing.assert_array_equal(sparse, np.asarray(arr.sparse))
    np.testing.assert_array_equal(dense2, np.asarray(arr.dense))
    assert bags[1].lengths.tolist() == [2, 0, 0, 2, 0] and enc.unmatched == [2]
    # the side table is an input: editing it makes the preprocessed data stale
    from dlf_torchrec.data.fingerprint import stale_reasons
    from dlf_torchrec.data.preprocess import _resolve
    assert stale_reasons(cfg, _resolve) == []
    Path(cfg.side_tables[0]["file"]).write_text(USERS + "40,u3,c\n")
    assert any(r.startswith("dataset.side_tables[0] ") for r in stale_reasons(cfg, _resolve))


@pytest.mark.parametrize(("users", "side", "message"), [
    ("age,user,tags\n20,u1,a\n30,u1,b\n", {}, "users.csv:3: key user='u1' given twice (first at line 2)"),
    ("age,user,tags\nold,u1,a\n", {}, "users.csv:2: non-numeric in numeric field (age=b'old')"),
    ("age,user,tags\n20,,a\n", {}, "users.csv:2: empty key user"),
    ("age,user\n20,u1\n", {}, "header columns do not match the schema: missing ['tags']"),
    (USERS, {"key": "uid"}, "dataset.side_tables[0].key: 'uid' is not a column of"),
    (USERS, {"key": "age"}, "dataset.side_tables[0].key: 'age' is not a feature or skipped column of the rows"),
    (USERS, {"columns": [{"name": "item"}, {"name": "user"}, {"name": "tags"}]},
     "dataset.side_tables[0]: column(s) ['item'] of"),
    (USERS, {"bogus": 1}, "dataset.side_tables[0]: unknown key(s) ['bogus']"),
])
def test_bad_side_tables_fail_naming_the_line_or_key(tmp_path: Path, users: str, side: dict, message: str) -> None:
    with pytest.raises((DataError, SchemaError)) as e:
        dataset_schema(_cfg(tmp_path, users, **side))
    assert message in str(e.value)


INTER = "user_id:token\titem_id:token\trating:float\tclass:token_seq\ttimestamp:float\n"


@pytest.mark.parametrize(("header", "message"), [
    ("user_id\titem_id:token\trating:float\n", "x.inter:1: column 1 'user_id': expected a typed name 'name:type'"),
    ("user_id:token\titem_id:tok\trating:float\n", "x.inter:1: column 'item_id:tok': unknown type 'tok'"),
    ("user_id:token\temb:float_seq\trating:float\n", "x.inter:1: column 'emb:float_seq': float_seq is not read; "
                                                    "list 'emb' under dataset.schema.skip"),
    ("user_id:token\tuser_id:token\trating:float\n", "x.inter:1: column 'user_id' given twice"),
    ("user_id:token\titem_id:token\n", "schema.label: 'rating' is not a column of x.inter"),
])
def test_recbole_header_errors_name_file_and_line(header: str, message: str) -> None:
    with pytest.raises(SchemaError, match=None) as e:
        recbole.header_schema({"label": {"column": "rating", "rule": ">= 4"}}, header.encode(), "x.inter")
    assert message in str(e.value)


def test_recbole_typed_header_and_label_rule(tmp_path: Path) -> None:
    schema = recbole.header_schema({"label": {"column": "rating", "rule": ">= 4"}, "skip": ["timestamp"],
                                    "sequences": {"class": {"max_len": 2}}}, INTER.encode(), "x.inter")
    assert [(c.name, c.kind) for c in schema.columns] == [
        ("user_id", "categorical"), ("item_id", "categorical"), ("rating", "label"), ("class", "sequence"),
        ("timestamp", "skip")]
    assert schema.columns[3].bag.separator == b" " and schema.columns[3].bag.max_len == 2  # type: ignore[union-attr]
    inter = tmp_path / "x.inter"
    # columns by name (another order than the header of the schema), labels by the rule, a bad rating counted
    inter.write_text("item_id:token\tuser_id:token\ttimestamp:float\trating:float\tclass:token_seq\n"
                     "i1\tu1\t1\t4.0\tA B C\ni2\tu2\t2\t3.5\t\ni1\tu2\t3\t5\tB\ni2\tu1\t4\tfive\tA\n")
    cfg = DatasetConfig(name="r", format="recbole", train=str(inter), valid=str(inter), output_dir=str(tmp_path / "o"),
                        schema={"label": {"column": "rating", "rule": ">= 4"}, "skip": ["timestamp"]},
                        progress=False, max_bad_fraction=0.5)
    meta = preprocess(cfg)
    assert meta.rejected_by_reason == {"non-numeric label": 2}
    arr = open_split(cfg.output_dir, "train", meta)
    assert np.asarray(arr.labels).tolist() == [1.0, 0.0, 1.0]
    assert np.diff(arr.bags[0][0]).tolist() == [3, 0, 1]


# ------------------------------------------------------------------- configs/examples: a trained RecBole run


def test_recbole_example_trains_and_predict_applies_the_join(tmp_path: Path) -> None:
    assert subprocess.run([sys.executable, "examples/make_data.py", "--out", str(tmp_path), "--rows", "1500"],
                          cwd=REPO, capture_output=True, timeout=120).returncode == 0
    ml = tmp_path / "ml-tiny" / "ml-tiny"
    lines = (ml.with_suffix(".inter")).read_text().splitlines(keepends=True)
    (tmp_path / "train.inter").write_text("".join(lines[:1201]))
    (tmp_path / "valid.inter").write_text(lines[0] + "".join(lines[1201:]))
    overrides = [f"dataset.train={tmp_path / 'train.inter'}", f"dataset.valid={tmp_path / 'valid.inter'}",
                 f"dataset.side_tables=[{{file: {ml}.user, key: user_id}}, {{file: {ml}.item, key: item_id}}]",
                 f"dataset.output_dir={tmp_path / 'data'}", f"training.output_dir={tmp_path / 'run'}",
                 "training.epochs=1", "training.batch_size=256", "model.hidden_units=[16]", "training.progress=false"]
    load_config(REPO / "configs/examples/recbole_ml.yaml", overrides)  # the example config is valid as committed
    proc = subprocess.run([sys.executable, "-m", "dlf_torchrec.train", "--config", "configs/examples/recbole_ml.yaml",
                           *overrides], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rows without a match (empty values)" in proc.stderr
    run = runs.load_run(str(tmp_path / "run"))
    assert run.meta.side_tables[0]["unmatched"]["valid"] > 0  # some users lack a .user row
    out = tmp_path / "valid.pred"
    assert predict.main(["--run", str(tmp_path / "run"), "--input", str(tmp_path / "valid.inter"), "--output",
                         str(out), "--no-progress"]) == 0
    probs = np.array([float(x) for x in out.read_text().splitlines()], dtype=np.float32)
    model = runs.load_model(run)
    batch = next(iter(make_dataloader(run.data_dir, "valid", 300, shuffle=False, for_eval=True)))
    with torch.no_grad():
        expected = torch.sigmoid(model(batch.dense_features, batch.sparse_features).logits.float()).numpy()
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-6)
