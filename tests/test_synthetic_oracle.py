"""The synthetic teacher: deterministic data, true probabilities aligned with the split rows, the oracle AUC, and
the first-order ``lr`` model that every synthetic run is compared with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlf_torchrec.config import DatasetConfig
from dlf_torchrec.data.meta import CategoricalField, DatasetMeta, FeatureSpec
from dlf_torchrec.data.preprocess import ensure_preprocessed
from dlf_torchrec.data.shards import open_split
from dlf_torchrec.data.synthetic import generate_criteo_tsv, prob_path, split_probabilities
from dlf_torchrec.models.lr import LRConfig
from dlf_torchrec.models.registry import build_model
from dlf_torchrec.training.oracle import oracle_auc


def test_generator_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a, b, c = (generate_criteo_tsv(tmp_path / f"{n}.tsv", 700, seed) for n, seed in (("a", 3), ("b", 3), ("c", 4)))
    assert Path(a).read_bytes() == Path(b).read_bytes()
    assert np.array_equal(np.load(prob_path(a)), np.load(prob_path(b)))
    assert Path(a).read_bytes() != Path(c).read_bytes()
    probs = np.load(prob_path(a))
    labels = np.array([int(line[:1]) for line in Path(a).read_bytes().splitlines()])
    assert probs.shape == labels.shape == (700,) and probs.dtype == np.float32
    assert 0 < probs.min() and probs.max() < 1 and abs(probs.mean() - labels.mean()) < 0.06


def test_probabilities_align_with_the_split_rows(tmp_path: Path) -> None:
    out = ensure_preprocessed(DatasetConfig(output_dir=str(tmp_path / "syn"), synthetic_rows=1500, progress=False))
    raw = Path(out) / "raw" / "train.tsv"
    probs = np.load(prob_path(raw))
    vocab = json.loads((Path(out) / "vocab.json").read_text())
    meta = DatasetMeta.load(out)
    # Each raw line's expected ids for C1..C26, decoded independently of the preprocessor's split logic.
    cat = [f for f in meta.categorical if f.name.startswith("C")]
    index = [{t: i + 1 for i, t in enumerate(vocab[f.name])} for f in cat]
    lines = raw.read_bytes().decode().splitlines()
    expected = np.array([[ix.get(tok, f.vocab_size - 1) for ix, f, tok in zip(index, cat, line.split("\t")[14:],
                                                                                     strict=True)]
                         for line in lines])
    labels = np.array([float(line[0]) for line in lines], dtype=np.float32)
    used: list[int] = []
    for split in meta.splits:
        rows = open_split(out, split, meta)
        y, p = split_probabilities(out, split)
        # Rows keep the file order within a split: match them to lines as a subsequence, by ids and label.
        line_of, pos = [], 0
        for r in range(len(rows)):
            while not (np.array_equal(expected[pos], rows.sparse[r, 13:]) and labels[pos] == rows.labels[r]):
                pos += 1
            line_of.append(pos)
            pos += 1
        assert np.array_equal(p, probs[line_of]) and np.array_equal(y, labels[line_of])
        used += line_of
    assert sorted(used) == list(range(len(lines)))  # every line in exactly one split


def test_oracle_auc_equals_sklearn(tmp_path: Path) -> None:
    out = ensure_preprocessed(DatasetConfig(output_dir=str(tmp_path / "syn"), synthetic_rows=3000, progress=False))
    for split in ("valid", "test"):
        labels, probs = split_probabilities(out, split)
        assert oracle_auc(out, split) == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)
        assert oracle_auc(out, split) > 0.7  # the teacher's signal is strong


def _kjt(spec: FeatureSpec, ids: torch.Tensor) -> KeyedJaggedTensor:
    """ids [B, F] -> one id per sample and field."""
    return KeyedJaggedTensor.from_lengths_sync(keys=spec.categorical_names, values=ids.T.reshape(-1),
                                               lengths=torch.ones(ids.numel(), dtype=torch.int32))


def test_lr_is_first_order_and_trains() -> None:
    torch.manual_seed(0)
    spec = FeatureSpec(categorical=(CategoricalField("c1", 6), CategoricalField("c2", 5)))
    model = build_model("lr", spec, 4, 0.1, LRConfig())
    dense = torch.zeros(4, 0)
    # No interaction: f(a, b) - f(a', b) - f(a, b') + f(a', b') == 0.
    logits = model(dense, _kjt(spec, torch.tensor([[1, 1], [2, 1], [1, 2], [2, 2]]))).logits.detach()
    assert abs(float(logits[0] - logits[1] - logits[2] + logits[3])) < 1e-6
    ids = torch.stack([torch.randint(1, 5, (256,)), torch.randint(1, 4, (256,))], dim=1)
    labels = (ids[:, 0] >= 3).float()  # learnable from c1 alone
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    losses = []
    for _ in range(20):
        loss = model.loss(model(torch.zeros(256, 0), _kjt(spec, ids)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
