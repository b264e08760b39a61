"""What every CTR model looks like to the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlf_torchrec.models.embedding import FieldEmbedding, batch_l2_penalty


@dataclass
class ModelOutput:
    """``logits``: [B] final logit (prediction = sigmoid). ``aux``: extra named [B] logits (e.g. TF4CTR's encoders)."""

    logits: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


class CTRModel(nn.Module):
    """Base for all models: ``forward(dense, sparse) -> ModelOutput`` and ``loss(output, labels) -> scalar``.

    Subclasses own their embedding module(s) (EmbeddingBagCollections, which DistributedModelParallel shards) and
    their over-arch (dense, data-parallel). The default loss is mean BCE on the final logits, computed from logits
    in fp32, plus ``aux["emb_reg"]`` when the model reports a batch-form embedding penalty.

    ``batch_l2``: lambda of the batch-form embedding L2 (``optimizer.embedding_regularizer_mode: batch``), set by the
    training stack; a model with ``batch_l2 > 0`` reports its penalty per sample as ``aux["emb_reg"]`` in training.
    """

    batch_l2: float = 0.0

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> ModelOutput:  # pragma: no cover
        raise NotImplementedError

    def loss(self, output: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(output.logits.float(), labels.float())
        if "emb_reg" in output.aux:
            loss = loss + output.aux["emb_reg"].sum()
        return loss


class TokenModel(CTRModel):
    """The common shape: field embeddings -> tokens [B, F, d] -> over-arch -> logits [B]."""

    def __init__(self, embedding: FieldEmbedding, over_arch: nn.Module) -> None:
        super().__init__()
        self.embedding = embedding
        self.over_arch = over_arch

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> ModelOutput:
        tokens = self.embedding(sparse, dense)
        output = ModelOutput(logits=self.over_arch(tokens).squeeze(-1))
        if self.training and self.batch_l2 > 0:
            output.aux["emb_reg"] = batch_l2_penalty([tokens], [self.embedding], self.batch_l2)
        return output
