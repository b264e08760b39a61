"""DCNv2 baseline (Wang et al. 2021): cross network and deep network on the flattened field tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from dlf_torchrec.data.meta import FeatureSpec
from dlf_torchrec.models.base import TokenModel
from dlf_torchrec.models.embedding import FieldEmbedding
from dlf_torchrec.models.layers import MLP, CrossNetV2
from dlf_torchrec.models.registry import register_model


@dataclass
class DCNv2Config:
    # parallel: [cross(x0) || deep(x0)] -> Linear; stacked: deep(cross(x0)) -> Linear (BARS/FuxiCTR naming).
    structure: Literal["parallel", "stacked"] = "parallel"
    num_cross_layers: int = 3
    low_rank: int | None = None
    hidden_units: list[int] = field(default_factory=lambda: [400, 400, 400])
    batch_norm: bool = True
    dropout: float = 0.0
    activation: str = "relu"


class DCNv2OverArch(nn.Module):
    """tokens [B, F, d] -> logits [B, 1]."""

    def __init__(self, num_fields: int, embedding_dim: int, cfg: DCNv2Config) -> None:
        super().__init__()
        width = num_fields * embedding_dim
        self.structure = cfg.structure
        self.cross = CrossNetV2(width, cfg.num_cross_layers, cfg.low_rank)
        self.deep = MLP(width, cfg.hidden_units, None, cfg.batch_norm, cfg.dropout, cfg.activation)
        head_in = self.deep.out_features + (width if cfg.structure == "parallel" else 0)
        self.head = nn.Linear(head_in, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x0 = tokens.flatten(1)
        if self.structure == "parallel":
            return self.head(torch.cat([self.cross(x0), self.deep(x0)], dim=1))
        return self.head(self.deep(self.cross(x0)))


@register_model("dcnv2", DCNv2Config)
def build_dcnv2(
    spec: FeatureSpec, embedding_dim: int, init_std: float, cfg: DCNv2Config, device: torch.device | None = None
) -> TokenModel:
    return TokenModel(
        FieldEmbedding(spec, embedding_dim, init_std, device=device),
        DCNv2OverArch(spec.num_fields, embedding_dim, cfg),
    )
