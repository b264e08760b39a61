"""DNN baseline: flattened field tokens -> MLP -> logit."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlf_torchrec.models.layers import MLP, MLPConfig, init_linear_
from dlf_torchrec.models.registry import register_over_arch


@dataclass
class DNNConfig(MLPConfig):
    """hidden_units, batch_norm, dropout, activation (:class:`MLPConfig`)."""


@register_over_arch("dnn", DNNConfig)
class DNN(nn.Module):
    """tokens [B, F, d] -> logits [B, 1]; ``encode`` gives the last hidden layer [B, hidden_units[-1]]."""

    def __init__(self, num_fields: int, embedding_dim: int, cfg: DNNConfig) -> None:
        super().__init__()
        self.mlp = MLP(num_fields * embedding_dim, cfg.hidden_units, None, cfg.batch_norm, cfg.dropout, cfg.activation)
        self.out_features = self.mlp.out_features
        self.head = nn.Linear(self.out_features, 1)
        init_linear_(self)  # FuxiCTR's model-wide init (docs/models.md#init)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(tokens.flatten(1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(tokens))
