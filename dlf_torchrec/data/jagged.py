"""The one place that lays out a batch's ids as KeyedJaggedTensor inputs (loader, scoring and export share it).

Keys: the categorical fields (one id per sample), then the bag fields (``lengths`` items per sample). Values are
key-major: field 0's ids for every sample, then field 1's, ...; a bag field's items follow sample after sample.

Weights (only when some bag field is weighted, docs/data.md#multi-valued): every key carries per-item weights, 1
for single ids and unweighted bags; the tables then pool by sum, and a ``mean`` bag gets its items' weights divided
by its length (so mean pooling is sum(w_i * e_i) / n, n the bag's length), which is TorchRec's mean pooling when the
weights are 1.
"""

from __future__ import annotations

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlf_torchrec.data.meta import FeatureSpec
from dlf_torchrec.data.shards import Bags


def kjt_inputs(spec: FeatureSpec, sparse: torch.Tensor, bag_lengths: torch.Tensor | None = None,
               bag_values: torch.Tensor | None = None, bag_weights: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(values int64 [N], lengths int32 [F * B + S * B], weights float32 [N] or None) of a batch.

    Args:
        sparse: ids int64 [B, F] of the categorical fields.
        bag_lengths: items int [B, S] per sample and bag field (None when the spec has no bag fields).
        bag_values: ids int64 [T], key-major (bag field 0's items of every sample, then field 1's, ...).
        bag_weights: item weights float32 [T] (those of unweighted bag fields are ignored); only read when
            ``spec.weighted``.
    """
    ids = sparse.t().reshape(-1)
    ones = torch.ones(ids.numel(), dtype=torch.int32, device=ids.device)
    if not spec.bags:
        return ids, ones, None
    assert bag_lengths is not None and bag_values is not None, "the spec has bag fields: pass their lengths/values"
    per_bag = bag_lengths.t().reshape(-1)
    values = torch.cat([ids, bag_values.to(torch.int64)])
    lengths = torch.cat([ones, per_bag.to(torch.int32)])
    if not spec.weighted:
        return values, lengths, None
    assert bag_weights is not None, "the spec has weighted bag fields: pass the item weights"
    mean = torch.tensor([b.pooling == "mean" for b in spec.bags], device=ids.device).view(-1, 1)
    weighted = torch.tensor([b.weighted for b in spec.bags], device=ids.device).view(-1, 1)
    # per bag: 1 / its length for mean pooling, else 1; spread over the bag's items (unweighted fields' weights: 1)
    scale = torch.where(mean, 1.0 / bag_lengths.t().clamp(min=1).float(), 1.0).reshape(-1)
    keep = weighted.expand(-1, bag_lengths.shape[0]).reshape(-1)
    repeats, items = per_bag.to(torch.int64), bag_values.shape[0]
    item_scale = torch.repeat_interleave(scale, repeats, output_size=items)
    item_keep = torch.repeat_interleave(keep, repeats, output_size=items)
    weights = torch.cat([ones.float(), torch.where(item_keep, bag_weights.float(), 1.0) * item_scale])
    return values, lengths, weights


def make_kjt(spec: FeatureSpec, values: torch.Tensor, lengths: torch.Tensor,
             weights: torch.Tensor | None = None) -> KeyedJaggedTensor:
    """The KeyedJaggedTensor of :func:`kjt_inputs`' output (keys ``spec.sparse_names``)."""
    return KeyedJaggedTensor(keys=spec.sparse_names, values=values, lengths=lengths, weights=weights)


def batch_kjt(spec: FeatureSpec, sparse: torch.Tensor, bag_lengths: torch.Tensor | None = None,
              bag_values: torch.Tensor | None = None, bag_weights: torch.Tensor | None = None) -> KeyedJaggedTensor:
    """ids [B, F] (+ bags, see :func:`kjt_inputs`) -> the model's KeyedJaggedTensor."""
    return make_kjt(spec, *kjt_inputs(spec, sparse, bag_lengths, bag_values, bag_weights))


def bag_tensors(bags: list[Bags], rows: int) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Per-field :class:`~dlf_torchrec.data.shards.Bags` of ``rows`` samples -> (lengths int64 [rows, S], values
    int64 [T] key-major, weights float32 [T] with 1 for unweighted fields); all None without bag fields."""
    if not bags:
        return None, None, None
    lengths = np.stack([np.asarray(b.lengths, dtype=np.int64) for b in bags], axis=1).reshape(rows, len(bags))
    values = np.concatenate([np.asarray(b.values, dtype=np.int64) for b in bags])
    weights = np.concatenate([np.ones(len(b.values), dtype=np.float32) if b.weights is None
                              else np.asarray(b.weights, dtype=np.float32) for b in bags])
    return torch.from_numpy(lengths), torch.from_numpy(values), torch.from_numpy(weights)
