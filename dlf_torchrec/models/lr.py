"""Logistic regression: a per-token scalar weight summed over fields plus a bias, first order only.

As an over-arch it is one Linear over the flattened field tokens [B, F * d]: the logit is ``b + sum_f <a_f, e_f>``
where ``e_f`` is the looked-up token's embedding, i.e. one free scalar ``<a_f, e_f>`` per token (FBGEMM's fused
kernels need a dimension divisible by 4, so d = 1 is not an option). No products of two tokens appear anywhere,
so it is the first-order baseline that ``configs/synthetic/lr.yaml`` trains (see :mod:`dlf_torchrec.training.oracle`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlf_torchrec.models.registry import register_over_arch


@dataclass
class LRConfig:
    def validate(self) -> None:
        pass


@register_over_arch("lr", LRConfig)
class LogisticRegression(nn.Module):
    """Logistic-regression over-arch: one Linear on the flattened field tokens, weights starting at 1, bias at 0
    (the logit starts as the plain sum of the tokens' entries).

    Args:
        num_fields (int): F, tokens per sample.
        embedding_dim (int): d, the size of one token.

    Example::

        lr = LogisticRegression(num_fields=4, embedding_dim=4)
        logits = lr(torch.randn(2, 4, 4))  # [2, 1]
    """

    def __init__(self, num_fields: int, embedding_dim: int) -> None:
        super().__init__()
        self.out_features = num_fields * embedding_dim
        self.head = nn.Linear(self.out_features, 1)
        nn.init.ones_(self.head.weight)  # the logit starts as the plain sum of the token weights
        nn.init.zeros_(self.head.bias)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, F, d] -> the flattened tokens [B, F·d]."""
        return tokens.flatten(1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, F, d] -> logits [B, 1]."""
        return self.head(self.encode(tokens))
