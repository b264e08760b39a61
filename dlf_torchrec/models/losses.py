"""CTR losses computed from logits in fp32 (docs/models.md#twin-focus-loss, #pitfall-tf-loss-numerics).

Everything here takes logits, never probabilities: ``log p_t = -softplus(-s z)`` and ``p_t = sigmoid(s z)`` with
``s = 2y - 1`` are exact for any finite logit, so there is no ``log(0)`` and no need for the ``-100`` clamp that
``F.binary_cross_entropy`` applies (and that autocast refuses). Labels are the usual hard 0/1 CTR labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Smallest base a focus factor is raised to. Keeps ``base ** gamma`` and its gradient finite for 0 < gamma < 1 at a
# base of exactly 0 (reachable only for c = 0 or c >= 1 with saturated fp32 probabilities); a no-op otherwise.
_MIN_BASE = 1e-12


def log_p_t(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Label-dependent probability of the true class and its log, from logits.

    Args: logits [B], labels [B] in {0, 1}. Returns (p_t [B], log p_t [B]) in fp32, where
    p_t = y*q + (1-y)*(1-q), q = sigmoid(z).
    """
    signed = (2.0 * labels.float() - 1.0) * logits.float()
    return torch.sigmoid(signed), -F.softplus(-signed)


def focus_terms(
    logits: torch.Tensor, labels: torch.Tensor, offset: float, gamma: float, increasing: bool
) -> torch.Tensor:
    """Per-sample focus-weighted BCE: ``factor(p_t)^gamma * (-log p_t)``.

    ``increasing=True``: factor = offset + p_t (the simple encoder, weight grows with confidence).
    ``increasing=False``: factor = offset - p_t (the complex encoder, weight shrinks with confidence).
    The factor is NOT detached (the authors' code lets the gradient flow through p_t). Its base is clamped to
    ``>= _MIN_BASE``, so a negative base (complex term with c > 1) gives a ~0 weight instead of NaN for non-integer
    gamma; for the paper's range c in [0, 1] the clamp never changes a value.

    Args: logits [B], labels [B]. Returns [B] fp32.
    """
    p_t, log_pt = log_p_t(logits, labels)
    bce = -log_pt
    if gamma == 0:
        return bce
    base = offset + p_t if increasing else offset - p_t
    return base.clamp_min(_MIN_BASE).pow(gamma) * bce


def twin_focus_loss(
    simple_logits: torch.Tensor,
    complex_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    c: float,
    gamma: float,
) -> torch.Tensor:
    """Twin Focus loss L_TF = alpha * L_simple + (1 - alpha) * L_complex (docs/models.md#twin-focus-loss, the
    authors' code's form).

    L_simple = mean[(c + p_t(z_s))^gamma * BCE(z_s, y)], L_complex = mean[((2 - c) - p_t(z_c))^gamma * BCE(z_c, y)].
    At gamma = 0 it is alpha * BCE(z_s) + (1 - alpha) * BCE(z_c).

    Args: simple_logits z_s [B], complex_logits z_c [B], labels [B] in {0, 1}. Returns a scalar (fp32).
    """
    simple = focus_terms(simple_logits, labels, c, gamma, increasing=True).mean()
    complex_ = focus_terms(complex_logits, labels, 2.0 - c, gamma, increasing=False).mean()
    return alpha * simple + (1.0 - alpha) * complex_


def bce_with_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE from logits in fp32. Args: logits [B], labels [B]. Returns a scalar."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
