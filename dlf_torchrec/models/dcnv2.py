"""DCNv2 baseline (Wang et al. 2021): cross network and deep network on the flattened field tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dlf_torchrec.models.layers import MLP, CrossNetV2, MLPConfig, init_linear_
from dlf_torchrec.models.registry import register_over_arch


@dataclass
class DCNv2Config(MLPConfig):
    """The deep network's keys (:class:`MLPConfig`) plus the cross network's."""

    # parallel: [cross(x0) || deep(x0)] -> Linear; stacked: deep(cross(x0)) -> Linear (BARS/FuxiCTR naming).
    structure: Literal["parallel", "stacked"] = "parallel"
    num_cross_layers: int = 3
    low_rank: int | None = None

    def validate(self) -> None:
        super().validate()
        if self.num_cross_layers < 0 or (self.low_rank is not None and self.low_rank < 1):
            raise ValueError(f"num_cross_layers must be >= 0 and low_rank >= 1, got {self.num_cross_layers}, "
                             f"{self.low_rank}")


@register_over_arch("dcnv2", DCNv2Config)
class DCNv2(nn.Module):
    """DCNv2 over-arch: a cross network and a deep network on the flattened field tokens x0 = vec(E) [B, F·d].

    ``structure="parallel"``: [cross(x0) ‖ deep(x0)] -> Linear; ``"stacked"``: deep(cross(x0)) -> Linear. The cross
    layers are x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l, W_l full rank or U_l V_lᵀ of rank ``low_rank``. Every
    ``nn.Linear`` starts Xavier-normal with zero bias (docs/models.md#init).

    Args:
        num_fields (int): F, tokens per sample.
        embedding_dim (int): d, the size of one token.
        hidden_units (Sequence[int]): the deep network's layer widths.
        batch_norm (bool): a BatchNorm1d after each hidden Linear of the deep network.
        dropout (float): dropout probability after each deep activation (0 = none).
        activation (str): the deep network's activation (``relu``, ``gelu``, ``silu``, ``tanh``, ``sigmoid``).
        structure (str): ``parallel`` or ``stacked`` (BARS / FuxiCTR naming).
        num_cross_layers (int): cross layers (0 = none).
        low_rank (int | None): rank of each cross layer's weight; None = full rank.

    Example::

        dcn = DCNv2(num_fields=4, embedding_dim=8, hidden_units=[16], num_cross_layers=2)
        tokens = torch.randn(2, 4, 8)  # [B, F, d]
        logits = dcn(tokens)  # [2, 1]
        hidden = dcn.encode(tokens)  # [2, dcn.out_features] = [2, 4 * 8 + 16]
    """

    def __init__(
        self,
        num_fields: int,
        embedding_dim: int,
        hidden_units: Sequence[int] = (400, 400, 400),
        batch_norm: bool = True,
        dropout: float = 0.0,
        activation: str = "relu",
        structure: Literal["parallel", "stacked"] = "parallel",
        num_cross_layers: int = 3,
        low_rank: int | None = None,
    ) -> None:
        super().__init__()
        width = num_fields * embedding_dim
        self.structure = structure
        self.cross = CrossNetV2(width, num_cross_layers, low_rank)
        self.deep = MLP(width, hidden_units, None, batch_norm, dropout, activation)
        self.out_features = self.deep.out_features + (width if structure == "parallel" else 0)
        self.head = nn.Linear(self.out_features, 1)
        init_linear_(self)  # FuxiCTR's model-wide init (docs/models.md#init)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, F, d] -> the head's input [B, out_features] (parallel: F·d + deep width; stacked: deep width)."""
        x0 = tokens.flatten(1)
        if self.structure == "parallel":
            return torch.cat([self.cross(x0), self.deep(x0)], dim=1)
        return self.deep(self.cross(x0))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, F, d] -> logits [B, 1]."""
        return self.head(self.encode(tokens))
