"""DNN baseline: flattened field tokens -> MLP -> logit."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from dlf_torchrec.data.meta import FeatureSpec
from dlf_torchrec.models.base import TokenModel
from dlf_torchrec.models.embedding import FieldEmbedding
from dlf_torchrec.models.layers import MLP
from dlf_torchrec.models.registry import register_model


@dataclass
class DNNConfig:
    hidden_units: list[int] = field(default_factory=lambda: [400, 400, 400])
    batch_norm: bool = True
    dropout: float = 0.0
    activation: str = "relu"


class DNNOverArch(nn.Module):
    """tokens [B, F, d] -> logits [B, 1]."""

    def __init__(self, num_fields: int, embedding_dim: int, cfg: DNNConfig) -> None:
        super().__init__()
        self.mlp = MLP(num_fields * embedding_dim, cfg.hidden_units, 1, cfg.batch_norm, cfg.dropout, cfg.activation)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(tokens.flatten(1))


@register_model("dnn", DNNConfig)
def build_dnn(
    spec: FeatureSpec, embedding_dim: int, init_std: float, cfg: DNNConfig, device: torch.device | None = None
) -> TokenModel:
    return TokenModel(
        FieldEmbedding(spec, embedding_dim, init_std, device=device),
        DNNOverArch(spec.num_fields, embedding_dim, cfg),
    )
