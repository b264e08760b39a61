"""Exact AUC and logloss over a whole split, with predictions gathered from every rank."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

LOGLOSS_EPS = 1e-7  # FuxiCTR / sklearn-style clipping (docs/models.md#pitfall-metrics)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties). NaN when only one class is present."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = float((labels > 0.5).sum())
    n_neg = float(labels.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # Average 1-based ranks over runs of tied scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [scores.size]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    rank_sum = ranks[labels > 0.5].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = LOGLOSS_EPS) -> float:
    """Mean binary cross-entropy of probabilities clipped to [eps, 1 - eps]."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def gather_predictions(probs: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate every rank's (probs, labels) and drop padding rows (label < 0).

    The evaluation loader gives every rank the same number of rows (padding labelled -1), so a plain all_gather
    of equal-sized tensors suffices.
    """
    probs, labels = probs.detach().float().flatten(), labels.detach().float().flatten()
    if dist.is_initialized() and dist.get_world_size() > 1:
        world = dist.get_world_size()
        sizes = [torch.zeros(1, dtype=torch.long, device=probs.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([probs.numel()], device=probs.device))
        if len({int(s.item()) for s in sizes}) != 1:
            raise RuntimeError(f"ranks evaluated different row counts {[int(s.item()) for s in sizes]}")
        all_probs = [torch.empty_like(probs) for _ in range(world)]
        all_labels = [torch.empty_like(labels) for _ in range(world)]
        dist.all_gather(all_probs, probs)
        dist.all_gather(all_labels, labels)
        probs, labels = torch.cat(all_probs), torch.cat(all_labels)
    keep = labels >= 0
    return probs[keep].cpu().numpy(), labels[keep].cpu().numpy()


def compute_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"auc": roc_auc(labels, probs), "logloss": log_loss(labels, probs), "rows": float(labels.size)}


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (an undefined AUC is NaN) replaced by None, for strict JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
