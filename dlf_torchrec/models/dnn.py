"""DNN baseline: flattened field tokens -> MLP -> logit."""

from __future__ import annotations

from collections.abc import Sequence
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
    """DNN over-arch: an MLP on the flattened field tokens vec(E) [B, F·d], then a Linear to one logit.

    Every ``nn.Linear`` starts Xavier-normal with zero bias (docs/models.md#init).

    Args:
        num_fields (int): F, tokens per sample.
        embedding_dim (int): d, the size of one token.
        hidden_units (Sequence[int]): the MLP's layer widths.
        batch_norm (bool): a BatchNorm1d after each hidden Linear.
        dropout (float): dropout probability after each activation (0 = none).
        activation (str): ``relu``, ``gelu``, ``silu``, ``tanh`` or ``sigmoid``.

    Example::

        dnn = DNN(num_fields=4, embedding_dim=8, hidden_units=[16, 16])
        tokens = torch.randn(2, 4, 8)  # [B, F, d]
        logits = dnn(tokens)  # [2, 1]
        hidden = dnn.encode(tokens)  # [2, dnn.out_features] = [2, 16]
    """

    def __init__(
        self,
        num_fields: int,
        embedding_dim: int,
        hidden_units: Sequence[int] = (400, 400, 400),
        batch_norm: bool = True,
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.mlp = MLP(num_fields * embedding_dim, hidden_units, None, batch_norm, dropout, activation)
        self.out_features = self.mlp.out_features
        self.head = nn.Linear(self.out_features, 1)
        init_linear_(self)  # FuxiCTR's model-wide init (docs/models.md#init)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, F, d] -> the last hidden layer [B, out_features] (hidden_units[-1], or F·d without layers)."""
        return self.mlp(tokens.flatten(1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, F, d] -> logits [B, 1]."""
        return self.head(self.encode(tokens))
