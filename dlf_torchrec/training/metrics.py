"""Exact AUC, logloss and group AUC (gAUC) over a whole split, with predictions gathered from every rank."""

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


def group_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """FuxiCTR's gAUC: the AUC of each group (rows sharing a ``groups`` id) that holds both labels, averaged with
    the group's row count as weight (impressions); groups of one class are left out. NaN when no group qualifies.

    Vectorised: rows sorted by (group, score); average ranks over ties within each group, one bincount per group.
    """
    y = np.asarray(labels, dtype=np.float64).ravel() > 0.5
    s = np.asarray(scores, dtype=np.float64).ravel()
    _, g = np.unique(np.asarray(groups).ravel(), return_inverse=True)
    order = np.lexsort((s, g))
    y, s, g = y[order], s[order], g[order]
    n = np.bincount(g).astype(np.float64)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])  # first row of each group
    rank = np.arange(len(g)) - start[g] + 1.0  # 1-based rank within the group
    new_run = np.ones(len(g), dtype=bool)
    new_run[1:] = (g[1:] != g[:-1]) | (s[1:] != s[:-1])
    run = np.cumsum(new_run) - 1
    run_first, run_last = np.flatnonzero(new_run), np.concatenate([np.flatnonzero(new_run)[1:] - 1, [len(g) - 1]])
    avg = (rank[run_first] + rank[run_last]) / 2.0  # average rank of each run of tied scores
    n_pos = np.bincount(g, weights=y, minlength=len(n))
    rank_sum = np.bincount(g, weights=avg[run] * y, minlength=len(n))
    both = (n_pos > 0) & (n_pos < n)
    if not both.any():
        return float("nan")
    auc = (rank_sum[both] - n_pos[both] * (n_pos[both] + 1) / 2.0) / (n_pos[both] * (n[both] - n_pos[both]))
    return float(np.sum(auc * n[both]) / np.sum(n[both]))


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = LOGLOSS_EPS) -> float:
    """Mean binary cross-entropy of probabilities clipped to [eps, 1 - eps]."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def gather_predictions(probs: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Concatenate every rank's (probs, labels, group ids) and drop padding rows (label < 0).

    The evaluation loader gives every rank the same number of rows (padding labelled -1), so a plain all_gather
    of equal-sized tensors suffices.
    """
    probs, labels = probs.detach().float().flatten(), labels.detach().float().flatten()
    if groups is not None:
        groups = groups.detach().long().flatten()
        if groups.numel() != probs.numel():
            raise RuntimeError(f"{groups.numel()} group ids for {probs.numel()} predictions")
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
        if groups is not None:
            all_groups = [torch.empty_like(groups) for _ in range(world)]
            dist.all_gather(all_groups, groups)
            groups = torch.cat(all_groups)
    keep = labels >= 0
    kept_groups = groups[keep].cpu().numpy() if groups is not None else None
    return probs[keep].cpu().numpy(), labels[keep].cpu().numpy(), kept_groups


def compute_metrics(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    """AUC, logloss and the row count; with ``groups`` (one id per row) also ``gauc`` (:func:`group_auc`)."""
    metrics = {"auc": roc_auc(labels, probs), "logloss": log_loss(labels, probs), "rows": float(labels.size)}
    if groups is not None:
        metrics["gauc"] = group_auc(labels, probs, groups)
    return metrics


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (an undefined AUC is NaN) replaced by None, for strict JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
