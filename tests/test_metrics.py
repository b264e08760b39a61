"""Our exact AUC / logloss against sklearn on the same predictions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from distributed import run_ranks
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from dlf_torchrec.training.metrics import (
    LOGLOSS_EPS,
    compute_metrics,
    gather_predictions,
    group_auc,
    json_safe,
    log_loss,
    roc_auc,
)


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_logloss_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 5000))
    labels = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(np.float32)
    # Coarse rounding creates many ties, the case where a naive rank AUC goes wrong.
    probs = np.round(np.clip(rng.beta(2, 5, n) + 0.2 * labels, 0, 1), int(rng.integers(1, 4))).astype(np.float32)
    assert roc_auc(labels, probs) == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)
    clipped = np.clip(probs.astype(np.float64), LOGLOSS_EPS, 1 - LOGLOSS_EPS)
    assert log_loss(labels, probs) == pytest.approx(sk_log_loss(labels, clipped, labels=[0, 1]), rel=1e-9)


def test_hand_computed_auc() -> None:
    # pairs (pos, neg): (0.8>0.3) (0.8>0.5) (0.4>0.3) (0.4<0.5) -> 3/4
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.8, 0.3, 0.4, 0.5])) == 0.75
    # a tie between a positive and a negative counts one half
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5


def test_single_class_auc_is_nan_and_extreme_probs_are_finite() -> None:
    assert np.isnan(roc_auc(np.ones(4), np.linspace(0, 1, 4)))
    metrics = compute_metrics(np.array([0.0, 1.0]), np.array([1.0, 0.0]))
    assert np.isfinite(metrics["logloss"]) and metrics["rows"] == 2.0


def test_results_with_an_undefined_auc_are_valid_json() -> None:
    """A one-class split has no AUC (NaN): results.json and metrics.jsonl write null, never a bare NaN."""
    results = {"valid": compute_metrics(np.array([0.2, 0.7]), np.array([1.0, 1.0]))}
    assert math.isnan(results["valid"]["auc"])
    text = json.dumps(json_safe(results), allow_nan=False)
    assert json.loads(text)["valid"]["auc"] is None and json.loads(text)["valid"]["rows"] == 2.0


def sklearn_gauc(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray) -> float:
    """Independent gAUC: sklearn's AUC per group holding both labels, weighted by the group's row count."""
    total = weight = 0.0
    for g in np.unique(groups):
        sel = groups == g
        if 0 < labels[sel].sum() < sel.sum():
            total += roc_auc_score(labels[sel], probs[sel]) * sel.sum()
            weight += sel.sum()
    return total / weight


def _grouped(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, max(n // 8, 2), n) * 7 + 3  # sparse ids, groups of 1..~20 rows
    labels = (rng.random(n) < 0.3).astype(np.float32)
    probs = np.round(np.clip(rng.beta(2, 5, n) + 0.1 * labels + 0.01 * (groups % 5), 0, 1), 2).astype(np.float32)
    return labels, probs, groups


@pytest.mark.parametrize("seed", range(4))
def test_group_auc_matches_per_group_sklearn(seed: int) -> None:
    labels, probs, groups = _grouped(seed, int(np.random.default_rng(seed).integers(50, 3000)))
    assert group_auc(labels, probs, groups) == pytest.approx(sklearn_gauc(labels, probs, groups), abs=1e-12)
    metrics = compute_metrics(probs, labels, groups)
    assert metrics["gauc"] == group_auc(labels, probs, groups) and metrics["auc"] == roc_auc(labels, probs)
    assert "gauc" not in compute_metrics(probs, labels)


def test_group_auc_hand_computed_and_undefined() -> None:
    # group 5: AUC 1 over 3 rows; group 9: positives 0.2, 0.5 vs negatives 0.6, 0.1 -> 2 of 4 pairs, over 4 rows;
    # group 1: one class only, left out
    labels = np.array([1, 0, 0, 1, 0, 0, 1, 1, 1])
    probs = np.array([0.9, 0.1, 0.2, 0.2, 0.6, 0.1, 0.5, 0.3, 0.7])
    groups = np.array([5, 5, 5, 9, 9, 9, 9, 1, 1])
    assert group_auc(labels, probs, groups) == pytest.approx((1.0 * 3 + 0.5 * 4) / 7)
    assert math.isnan(group_auc(np.array([1, 1, 0]), np.array([0.1, 0.2, 0.3]), np.array([1, 1, 2])))


def _gather_on_rank(seed: int) -> dict[str, float]:
    """Each rank evaluates its own rows, padded with label -1 rows as the eval loader pads the last share."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    labels, probs, groups = _grouped(seed, 301)
    mine = slice(0, 151) if rank == 0 else slice(151, 301)
    pad = 151 - (mine.stop - mine.start)
    p, y, g = gather_predictions(
        torch.from_numpy(np.concatenate([probs[mine], np.full(pad, 0.5, np.float32)])),
        torch.from_numpy(np.concatenate([labels[mine], -np.ones(pad, np.float32)])),
        torch.from_numpy(np.concatenate([groups[mine], np.zeros(pad, np.int64)])))
    return compute_metrics(p, y, g)


def test_group_auc_on_two_ranks(tmp_path) -> None:
    labels, probs, groups = _grouped(11, 301)
    for metrics in run_ranks(_gather_on_rank, 2, str(tmp_path), 11):
        assert metrics["rows"] == 301
        assert metrics["gauc"] == pytest.approx(sklearn_gauc(labels, probs, groups), abs=1e-12)
