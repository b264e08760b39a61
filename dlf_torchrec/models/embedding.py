"""Field embeddings: one EmbeddingBagConfig per table (sharded by TorchRec) plus dense-field tokens.

A table per categorical field and per bag field that has no ``share_embedding``; a shared table lists every feature
it serves in ``feature_names`` (TorchRec looks each feature up in it and pools each separately). A table serving a
``mean`` bag pools by ``PoolingType.MEAN`` (a single id pools alike under sum and mean), except in weighted datasets,
where every table pools by sum and the weights carry the mean (:mod:`dlf_torchrec.data.jagged`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from dlf_torchrec.data.meta import FeatureSpec


def table_configs(spec: FeatureSpec, embedding_dim: int, init_std: float, prefix: str = "") -> list[EmbeddingBagConfig]:
    """One table per categorical field and per unshared bag field, rows = vocab_size (PAD 0 .. OOV last), init
    N(0, init_std^2); a table's ``feature_names`` are its own field and the bag fields sharing it."""
    init = functools.partial(nn.init.normal_, mean=0.0, std=init_std)
    owners = [(f.name, f.vocab_size) for f in spec.categorical]
    owners += [(b.name, b.vocab_size) for b in spec.bags if b.table == b.name]
    configs = []
    for name, rows in owners:
        bags = [b for b in spec.bags if b.table == name]
        mean = any(b.pooling == "mean" for b in bags) and not spec.weighted
        configs.append(EmbeddingBagConfig(
            name=f"{prefix}t_{name}",
            embedding_dim=embedding_dim,
            num_embeddings=rows,
            feature_names=([name] if name in spec.categorical_names else []) + [b.name for b in bags],
            pooling=PoolingType.MEAN if mean else PoolingType.SUM,
            init_fn=init,
        ))
    return configs


class DenseTokens(nn.Module):
    """Numeric field j -> x_j * v_j (docs/models.md#numeric-field-tokens): per-field vectors, no bias,
    Xavier-normal init.

    Args: dense [B, num_dense]. Returns [B, num_dense, d].
    """

    def __init__(self, num_dense: int, embedding_dim: int, device: torch.device | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_dense, embedding_dim, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier-normal of a 1->d Linear per field, as the model-wide init in FuxiCTR does.
        nn.init.normal_(self.weight, std=(2.0 / (1 + self.weight.shape[1])) ** 0.5)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return dense.unsqueeze(-1) * self.weight


@torch.fx.wrap  # a leaf for TorchRec's pipeline tracer: the keys are only known at run time
def spec_ordered_tokens(pooled: KeyedTensor, feature_names: list[str], dim: int) -> torch.Tensor:
    """Pooled embeddings [B, F * d] (keys in the EBC's order) -> field tokens [B, F, d] in ``feature_names`` order.

    A sharded EBC returns its keys grouped by sharding type and rank, so their order depends on the plan (and world
    size): taking the values in their own order fed fields to the wrong slots once a checkpoint was read under
    another plan. One ``index_select`` (not a per-field slice + stack, whose backward writes a full-size zero
    gradient per field: ~8% of a fused Criteo step) reorders them; no copy when the order already matches.
    """
    values = pooled.values()
    tokens = values.view(values.shape[0], len(feature_names), dim)
    keys = pooled.keys()
    if keys == feature_names:
        return tokens
    return tokens.index_select(1, _spec_permutation(tuple(keys), tuple(feature_names), values.device))


@functools.lru_cache(maxsize=64)
def _spec_permutation(keys: tuple[str, ...], names: tuple[str, ...], device: torch.device) -> torch.Tensor:
    """Position of each of ``names`` among ``keys`` int64 [F] on ``device``; fixed per plan, so built once (not a
    host-to-device copy every step)."""
    if sorted(keys) != sorted(names):
        raise ValueError(f"pooled embeddings have keys {list(keys)}, expected {list(names)}")
    position = {k: i for i, k in enumerate(keys)}
    return torch.tensor([position[n] for n in names], device=device)


class FieldEmbedding(nn.Module):
    """Categorical ids + dense values -> field tokens.

    Args:
        sparse: KeyedJaggedTensor with one id per sample for each categorical field, then the bag fields' items
            (keys ``spec.sparse_names``; :mod:`dlf_torchrec.data.jagged`).
        dense: [B, num_dense] float values (ignored when the spec has no dense fields).
    Returns:
        [B, num_dense + num_categorical + num_bags, d]: dense tokens first, then categorical, then one pooled token
        per bag field, in spec order.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int,
        init_std: float = 1e-4,
        prefix: str = "",
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.num_categorical = len(spec.categorical) + len(spec.bags)  # pooled tokens (the EBC's outputs)
        self.feature_names = spec.sparse_names
        self.ebc = EmbeddingBagCollection(
            tables=table_configs(spec, embedding_dim, init_std, prefix), is_weighted=spec.weighted, device=device
        )
        dense_device = None if device is None or device.type == "meta" else device
        self.dense_tokens = DenseTokens(len(spec.dense), embedding_dim, dense_device) if spec.dense else None

    @property
    def num_fields(self) -> int:
        return self.num_categorical + (self.dense_tokens.weight.shape[0] if self.dense_tokens is not None else 0)

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        pooled = self.ebc(sparse)
        tokens = spec_ordered_tokens(pooled, self.feature_names, self.embedding_dim)  # [B, F_cat, d]
        if self.dense_tokens is None:
            return tokens
        return torch.cat([self.dense_tokens(dense), tokens], dim=1)


def batch_l2_penalty(tokens: Sequence[torch.Tensor], embeddings: Sequence[FieldEmbedding], lam: float) -> torch.Tensor:
    """Batch-form embedding L2 (``optimizer.embedding_regularizer_mode: batch``), per sample.

    Args:
        tokens: the field tokens [B, F, d_k] that each module in ``embeddings`` produced for this batch.
        embeddings: the FieldEmbedding modules, in the same order.
        lam: the regulariser lambda.
    Returns:
        [B] fp32, summing to lambda/2 * (sum of the squared categorical tokens of the batch + ||V_dense||^2 of each
        module): a row looked up by k samples of the batch is decayed k times; rows absent from the batch not at all.
    """
    batch = tokens[0].shape[0]
    total = torch.zeros(batch, dtype=torch.float32, device=tokens[0].device)
    for toks, emb in zip(tokens, embeddings, strict=True):
        num_dense = toks.shape[1] - emb.num_categorical
        total = total + toks[:, num_dense:].float().pow(2).sum(dim=(1, 2))
        if emb.dense_tokens is not None:
            total = total + emb.dense_tokens.weight.float().pow(2).sum() / batch
    return 0.5 * lam * total
