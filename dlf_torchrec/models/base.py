"""What every CTR model looks like to the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass
class ModelOutput:
    """``logits``: [B] final logit (prediction = sigmoid). ``aux``: extra named [B] logits (e.g. TF4CTR's encoders)."""

    logits: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


class CTRModel(nn.Module):
    """Base for all models: ``forward(dense, sparse) -> ModelOutput`` and ``loss(output, labels) -> scalar``.

    Subclasses own their embedding module(s) (EmbeddingBagCollections, which DistributedModelParallel shards) and
    their over-arch (dense, data-parallel). The default loss is mean BCE on the final logits, computed from logits
    in fp32.
    """

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> ModelOutput:  # pragma: no cover
        raise NotImplementedError

    def loss(self, output: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output.logits.float(), labels.float())


class TokenModel(CTRModel):
    """The common shape: field embeddings -> tokens [B, F, d] -> over-arch -> logits [B]."""

    def __init__(self, embedding: nn.Module, over_arch: nn.Module) -> None:
        super().__init__()
        self.embedding = embedding
        self.over_arch = over_arch

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> ModelOutput:
        tokens = self.embedding(sparse, dense)
        return ModelOutput(logits=self.over_arch(tokens).squeeze(-1))
