"""DCNv2 baseline (Wang et al. 2021): cross network and deep network on the flattened field tokens."""

from __future__ import annotations

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
    """tokens [B, F, d] -> logits [B, 1]; ``encode`` gives the head's input [B, out_features]."""

    def __init__(self, num_fields: int, embedding_dim: int, cfg: DCNv2Config) -> None:
        super().__init__()
        width = num_fields * embedding_dim
        self.structure = cfg.structure
        self.cross = CrossNetV2(width, cfg.num_cross_layers, cfg.low_rank)
        self.deep = MLP(width, cfg.hidden_units, None, cfg.batch_norm, cfg.dropout, cfg.activation)
        self.out_features = self.deep.out_features + (width if cfg.structure == "parallel" else 0)
        self.head = nn.Linear(self.out_features, 1)
        init_linear_(self)  # FuxiCTR's model-wide init (docs/models.md#init)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        x0 = tokens.flatten(1)
        if self.structure == "parallel":
            return torch.cat([self.cross(x0), self.deep(x0)], dim=1)
        return self.deep(self.cross(x0))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(tokens))
