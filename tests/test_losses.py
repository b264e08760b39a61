"""Twin Focus loss (docs/models.md#twin-focus-loss) against a direct formula, including saturated logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dlf_torchrec.models.losses import bce_with_logits, log_p_t, twin_focus_loss

LOGITS = [-50.0, -3.0, -0.5, 0.0, 0.7, 4.0, 50.0]


def _pairs() -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.tensor([v for v in LOGITS for _ in (0, 1)], dtype=torch.float64)
    y = torch.tensor([float(i % 2) for i in range(len(z))], dtype=torch.float64)
    return z, y


def _direct(z_s: list[float], z_c: list[float], y: list[float], alpha: float, c: float, gamma: float) -> float:
    """The spec's formula, written out per sample in float64 math (log-sum-exp form so +-50 stays exact)."""

    def softplus(x: float) -> float:
        return max(x, 0.0) + math.log1p(math.exp(-abs(x)))

    def term(z: float, label: float, simple: bool) -> float:
        s = 2 * label - 1
        p_t = 1 / (1 + math.exp(-s * z))
        bce = softplus(-s * z)
        base = c + p_t if simple else (2 - c) - p_t
        return base**gamma * bce

    n = len(y)
    simple = sum(term(z, t, True) for z, t in zip(z_s, y, strict=True)) / n
    complex_ = sum(term(z, t, False) for z, t in zip(z_c, y, strict=True)) / n
    return alpha * simple + (1 - alpha) * complex_


@pytest.mark.parametrize(("alpha", "c", "gamma"), [(0.25, 0.8, 2.0), (0.35, 0.9, 1.0), (0.2, 0.7, 3.0), (0.5, 1.0, 2)])
def test_twin_focus_matches_direct_formula(alpha: float, c: float, gamma: float) -> None:
    z, y = _pairs()
    z_c = z.flip(0) * 0.5
    got = twin_focus_loss(z.float(), z_c.float(), y.float(), alpha, c, gamma)
    want = _direct(z.tolist(), z_c.tolist(), y.tolist(), alpha, c, gamma)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_extreme_logits_finite_values_and_gradients() -> None:
    z, y = _pairs()
    z_s = z.float().requires_grad_()
    z_c = (-z).float().requires_grad_()
    loss = twin_focus_loss(z_s, z_c, y.float(), 0.25, 0.8, 2.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z_s.grad).all() and torch.isfinite(z_c.grad).all()
    # A confidently wrong sample (y=1, z=-50) has BCE ~ 50, not the -100 clamp of probability-space BCE.
    p_t, lp = log_p_t(torch.tensor([-50.0]), torch.tensor([1.0]))
    assert lp.item() == pytest.approx(-50.0, rel=1e-6)
    assert p_t.item() > 0


def test_half_precision_inputs_are_computed_in_fp32() -> None:
    z, y = _pairs()
    got = twin_focus_loss(z.half(), z.half(), y, 0.25, 0.8, 2.0)
    assert got.dtype == torch.float32 and torch.isfinite(got)


def test_gamma_zero_reduces_to_alpha_mixed_bce() -> None:
    z, y = _pairs()
    z_s, z_c, y = z.float(), (0.3 * z - 1).float(), y.float()
    alpha = 0.3
    got = twin_focus_loss(z_s, z_c, y, alpha, 0.8, 0.0)
    bce_s = F.binary_cross_entropy_with_logits(z_s, y)
    bce_c = F.binary_cross_entropy_with_logits(z_c, y)
    assert got.item() == pytest.approx((alpha * bce_s + (1 - alpha) * bce_c).item(), rel=1e-6)
    # alpha = 1 / 0 picks one encoder only.
    assert twin_focus_loss(z_s, z_c, y, 1.0, 0.8, 0.0).item() == pytest.approx(bce_s.item(), rel=1e-6)
    assert twin_focus_loss(z_s, z_c, y, 0.0, 0.8, 0.0).item() == pytest.approx(bce_c.item(), rel=1e-6)


def test_modulating_factor_is_not_detached() -> None:
    # d/dz of (c + p_t)^g * BCE differs from (c + p_t)^g * d BCE/dz when the factor carries gradient.
    z = torch.tensor([0.4], requires_grad=True)
    y = torch.tensor([1.0])
    twin_focus_loss(z, z.detach(), y, 1.0, 0.8, 2.0).backward()
    p = torch.sigmoid(torch.tensor(0.4)).item()
    bce = -math.log(p)
    dfactor = 2 * (0.8 + p) * p * (1 - p)
    want = dfactor * bce + (0.8 + p) ** 2 * (p - 1)
    assert z.grad.item() == pytest.approx(want, rel=1e-5)


def test_complex_base_clamped_for_c_above_one() -> None:
    # c = 1.2: base 0.8 - p_t < 0 for confident samples; non-integer gamma must not give NaN.
    z = torch.tensor([10.0, -10.0, 0.0], requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0])
    loss = twin_focus_loss(z, z, y, 0.25, 1.2, 1.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_bce_with_logits_matches_torch() -> None:
    z, y = _pairs()
    assert bce_with_logits(z, y).item() == pytest.approx(F.binary_cross_entropy_with_logits(z, y).item(), rel=1e-6)
