"""Multi-valued (``type: sequence``) csv fields: the item rules (max_len keeps the last items, weights, empty bags,
OOV per token, a shared vocabulary), jagged shards and loader, pooling, bad input; and a trained run whose predict and
export outputs equal the trainer's model on the preprocessed rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dlf_torchrec import export, predict
from dlf_torchrec import run as runs
from dlf_torchrec.config import DatasetConfig
from dlf_torchrec.data import parse as P
from dlf_torchrec.data.formats.csv import csv_schema
from dlf_torchrec.data.jagged import batch_kjt
from dlf_torchrec.data.loader import make_dataloader
from dlf_torchrec.data.meta import BagField, CategoricalField, DatasetMeta, FeatureSpec
from dlf_torchrec.data.preprocess import preprocess
from dlf_torchrec.data.reading import BadRowError
from dlf_torchrec.data.schema import SchemaError
from dlf_torchrec.data.shards import open_split
from dlf_torchrec.models.embedding import FieldEmbedding
from dlf_torchrec.training.metrics import compute_metrics

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import multivalued  # noqa: E402

SCHEMA = {"header": True, "label": "y", "columns": [
    {"name": "y"}, {"name": "item"},
    {"name": "hist", "type": "sequence", "max_len": 3, "share_embedding": "item"},
    {"name": "tags", "type": "sequence", "separator": "|", "weighted": True}]}


def test_items_max_len_weights_and_empty_bags() -> None:
    schema = csv_schema(SCHEMA)
    row = P.parse_line(schema, b"1,i1,a^b^^c^d^,x:0.5|y:2|z:-1e-1")
    assert row.categorical == (b"i1",)
    assert row.bags == (((b"b", b"c", b"d"), None), ((b"x", b"y", b"z"), (0.5, 2.0, -0.1)))  # the last 3 kept
    assert P.parse_line(schema, b"0,i2,,").bags == (((), None), ((), ()))  # empty values: empty bags
    assert P.parse_line(schema, b"0,i2,^,w:x:1").bags[1] == ((b"w:x",), (1.0,))  # the weight follows the last ':'
    for bad in (b"0,i,a,x", b"0,i,a,x:", b"0,i,a,x:1|y:nan", b"0,i,a,x:1e999"):
        with pytest.raises(P.RowRejected, match=P.BAD_WEIGHT) as e:
            P.parse_line(schema, bad)
        assert "tags" in e.value.detail
    with pytest.raises(P.RowRejected, match=P.TOKEN_TOO_LONG):
        P.parse_line(schema, b"0,i,a^" + b"b" * 300 + b",")


@pytest.mark.parametrize(("column", "message"), [
    ({"name": "h", "type": "categorical", "separator": "^"}, r"unknown key\(s\) \['separator'\].*type: sequence"),
    ({"name": "h", "type": "sequence", "share_embedding": "nope"}, "'nope' is not a categorical or sequence"),
    ({"name": "h", "type": "sequence", "pooling": "max"}, "pooling: expected sum or mean"),
    ({"name": "h", "type": "sequence", "max_len": 0}, "max_len: expected a positive integer"),
    ({"name": "h", "type": "sequence", "separator": ","}, "is also the schema's delimiter"),
    ({"name": "h", "type": "sequence", "weighted": True, "separator": ":"}, "separates a weighted item"),
    ({"name": "h", "type": "sequence", "share_embedding": "item", "pooling": "sum"}, "one table, one pooling"),
    ({"name": "h", "type": "sequence", "share_embedding": "hist"}, "'hist' itself shares 'item''s table"),
])
def test_bad_sequence_schemas_name_the_key(column: dict, message: str) -> None:
    spec = {**SCHEMA, "columns": [*SCHEMA["columns"][:3], column]}
    with pytest.raises(SchemaError, match=message):
        csv_schema(spec)


def _dataset(tmp_path: Path, **kw) -> tuple[DatasetConfig, DatasetMeta]:
    train = tmp_path / "train.csv"
    train.write_text("y,item,hist,tags\n" + "".join(
        f"{i % 2},i{i % 3},{'^'.join(['a', 'b', 'q'][:i % 4])},{'x:0.5|y:2' if i % 2 else ''}\n" for i in range(12)))
    valid = tmp_path / "valid.csv"
    valid.write_text("y,item,hist,tags\n1,i0,a^new^q^b^a,x:3\n0,i9,,\n1,i1,i2,y:1|new:4\n")
    cfg = DatasetConfig(name="t", format="csv", train=str(train), valid=str(valid), schema=SCHEMA, min_count=2,
                        output_dir=str(tmp_path / "out"), progress=False, **kw)
    return cfg, preprocess(cfg)


def test_shared_vocabulary_oov_per_token_and_jagged_shards(tmp_path: Path) -> None:
    cfg, meta = _dataset(tmp_path)
    vocab = json.loads((tmp_path / "out" / "vocab.json").read_text())
    # item and hist share one table: counted together (a 9, b 6, q 3, i0..i2 4 each); 'tags' has its own
    assert list(vocab) == ["item", "tags"] and vocab["item"] == ["a", "b", "i0", "i1", "i2", "q"]
    assert meta.bags == [BagField("hist", 8, "item", "mean"), BagField("tags", 4, "tags", "sum", True)]
    oov = 7
    valid = open_split(cfg.output_dir, "valid", meta)
    offsets, ids, weights = valid.bags[0]
    assert offsets.tolist() == [0, 3, 3, 4]  # max_len 3: the last three of a^new^q^b^a; an empty bag; one item
    assert ids.tolist() == [6, 2, 1, 5] and weights is None  # q b a | | i2 (a token of the shared item vocabulary)
    offsets, ids, weights = valid.bags[1]
    assert offsets.tolist() == [0, 1, 1, 3] and ids.tolist() == [1, 2, 3] and weights.tolist() == [3, 1, 4]
    assert valid.sparse[:, 0].tolist() == [3, oov, 4]
    # the loader: KJT keys item, hist, tags; an eval padding row (world 2, 3 rows: rank 1 pads one) has empty bags
    batch = next(iter(make_dataloader(cfg.output_dir, "valid", 4, rank=1, world_size=2, shuffle=False,
                                      for_eval=True)))
    kjt = batch.sparse_features
    assert kjt.keys() == ["item", "hist", "tags"]
    assert kjt["hist"].lengths().tolist() == [1, 0] and kjt["hist"].values().tolist() == [5]
    assert kjt["tags"].weights().tolist() == [1.0, 4.0] and kjt["item"].weights().tolist() == [1.0, 1.0]
    assert batch.labels.tolist() == [1.0, -1.0]


def test_mean_and_sum_pooling_and_the_weighted_mean() -> None:
    bags = (BagField("hist", 6, "item", "mean"), BagField("tags", 5, "tags", "sum"))
    for weighted in (False, True):
        spec = FeatureSpec(categorical=(CategoricalField("item", 6),),
                           bags=(bags[0], BagField("tags", 5, "tags", "sum", weighted)))
        emb = FieldEmbedding(spec, 3, init_std=1.0)
        tables = {n: t.weight.detach() for n, t in emb.ebc.embedding_bags.items()}
        lengths = torch.tensor([[2, 0], [0, 3]])
        values = torch.tensor([1, 4, 2, 2, 3])
        w = torch.tensor([9.0, 9.0, 0.5, 2.0, 1.0])  # hist is unweighted: its weights are ignored
        tokens = emb(batch_kjt(spec, torch.tensor([[5], [0]]), lengths, values, w), torch.zeros(2, 0))
        item, tag = tables["t_item"], tables["t_tags"]
        expected_tags = (0.5 * tag[2] + 2.0 * tag[2] + tag[3]) if weighted else 2 * tag[2] + tag[3]
        expected = torch.stack([torch.stack([item[5], (item[1] + item[4]) / 2, torch.zeros(3)]),
                                torch.stack([item[0], torch.zeros(3), expected_tags])])
        torch.testing.assert_close(tokens, expected)


def test_malformed_weight_stops_with_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("y,item,hist,tags\n1,i0,a,x:1\n0,i1,b,x:heavy\n")
    cfg = DatasetConfig(name="t", format="csv", train=str(bad), schema=SCHEMA, bad_rows="fail",
                        output_dir=str(tmp_path / "out"), progress=False)
    message = rf"^{bad}:3: {P.BAD_WEIGHT} \(tags item b'x:heavy': expected token:weight\)$"
    with pytest.raises(BadRowError, match=message):
        preprocess(cfg)


def test_single_valued_meta_has_no_bag_keys(tmp_path: Path) -> None:
    data = tmp_path / "t.csv"
    data.write_text("".join(f"{i % 2},u{i % 3}\n" for i in range(20)))
    cfg = DatasetConfig(name="t", format="csv", train=str(data), split=[1.0, 0.0, 0.0], progress=False,
                        schema={"label": "y", "columns": [{"name": "y"}, {"name": "u"}]},
                        output_dir=str(tmp_path / "o"))
    preprocess(cfg)
    raw = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert "bags" not in raw and "bag_values" not in raw["splits"]["train"]
    assert sorted(os.listdir(tmp_path / "o" / "train")) == ["labels.bin", "sparse.bin"]


# ------------------------------------------------------------------------------ a trained run: predict, export


@pytest.fixture(scope="module")
def bag_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("bag_run")
    data = {}
    for k, (split, n) in enumerate([("train", 3000), ("valid", 600)]):
        data[split] = str(tmp / f"{split}.csv")
        multivalued.write_rows(data[split], n, seed=k)
    cfg = multivalued.config(data, str(tmp), as_bag=True, epochs=1, model="dcnv2")
    cfg["model"]["hidden_units"] = [16]
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "dlf_torchrec.train", "--config", str(tmp / "config.yaml")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return tmp / "run", data


@pytest.mark.slow
def test_predict_and_export_equal_the_trainers_model(bag_run: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    run_dir, data = bag_run
    run = runs.load_run(str(run_dir))
    model = runs.load_model(run)
    spec = run.meta.feature_spec
    assert [b.name for b in spec.bags] == ["history", "tags"] and spec.weighted
    out = tmp_path / "valid.pred"
    assert predict.main(["--run", str(run_dir), "--input", data["valid"], "--output", str(out), "--no-progress",
                         "--batch-size", "128"]) == 0
    probs = np.array([float(x) for x in out.read_text().splitlines()], dtype=np.float32)
    # the trainer's model on the preprocessed valid rows, batched as the loader batches them
    loader = make_dataloader(run.data_dir, "valid", 600, shuffle=False, for_eval=True)
    batch = next(iter(loader))
    with torch.no_grad():
        expected = torch.sigmoid(model(batch.dense_features, batch.sparse_features).logits.float()).numpy()
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-6)
    results = json.loads((run_dir / "results.json").read_text())
    labels = np.asarray(open_split(run.data_dir, "valid", run.meta).labels)
    assert compute_metrics(probs, labels)["auc"] == pytest.approx(results["valid"]["auc"], abs=1e-6)
    # export: the plain-tensor module on the same rows (lengths [B, S], values/weights field-major)
    path = tmp_path / "model.pt2"
    assert export.main(["--run", str(run_dir), "--out", str(path)]) == 0
    module, extras = export.load_exported(str(path))
    assert json.loads(extras["serving.json"])["inputs"]["bags"]["fields"] == ["history", "tags"]
    arr = open_split(run.data_dir, "valid", run.meta)
    lengths = np.stack([np.diff(o) for o, _, _ in arr.bags], axis=1)
    values = np.concatenate([np.asarray(v, dtype=np.int64) for _, v, _ in arr.bags])
    weights = np.concatenate([np.ones(len(v), np.float32) if w is None else np.asarray(w) for _, v, w in arr.bags])
    with torch.no_grad():
        exported = module(torch.from_numpy(np.array(arr.dense)), torch.from_numpy(np.array(arr.sparse, np.int64)),
                          torch.from_numpy(lengths), torch.from_numpy(values), torch.from_numpy(weights))
    np.testing.assert_allclose(exported.numpy(), probs, rtol=0, atol=1e-6)


def test_oov_rates_of_bag_fields_are_per_item() -> None:
    from dlf_torchrec.data.shards import Bags
    from dlf_torchrec.oov import OovCounter

    counter = OovCounter(["item", "hist"], np.array([4, 9]), None, bags=1)
    counter.add(np.array([[4], [1], [2], [4]]), [Bags(np.array([3, 0, 1, 0]), np.array([9, 1, 9, 2]))])
    np.testing.assert_allclose(counter.rates, [0.5, 0.5])  # 2 of 4 rows; 2 of 4 items (empty bags count nothing)
    assert counter.report(0.5)["fields"]["hist"]["oov"] == 2
