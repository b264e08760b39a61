"""Our exact AUC / logloss against sklearn on the same predictions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from dlf_torchrec.training.metrics import LOGLOSS_EPS, compute_metrics, json_safe, log_loss, roc_auc


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
