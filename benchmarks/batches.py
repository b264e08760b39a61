"""Synthetic training batches for the benchmarks: Criteo-shaped (Zipf ids, Criteo Kaggle cardinalities) or uniform
random ids on any dataset's feature spec."""

from __future__ import annotations

import sys
from typing import Any

# Criteo Kaggle (Display Advertising Challenge, 45.8M rows) distinct values of C1..C26, as listed by the DLRM
# reference implementation for the Kaggle dataset.
CRITEO_KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992, 5461306, 10, 5652,
    2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)
NUM_DENSE = 13


def cardinalities(max_rows_per_table: int) -> list[int]:
    """Table rows per categorical field: real Criteo size + PAD + OOV, capped at ``max_rows_per_table``."""
    cap = max_rows_per_table if max_rows_per_table > 0 else sys.maxsize
    return [max(3, min(c + 2, cap)) for c in CRITEO_KAGGLE_CARDINALITIES]


def feature_spec(max_rows_per_table: int) -> Any:
    from dlf_torchrec.data.meta import CategoricalField, FeatureSpec

    return FeatureSpec(
        categorical=tuple(CategoricalField(f"C{i + 1}", v) for i, v in enumerate(cardinalities(max_rows_per_table))),
        dense=tuple(f"I{i + 1}" for i in range(NUM_DENSE)),
    )


def one_id_per_field(spec: Any, ids: Any) -> Any:
    """ids int64 [F, B] (fields in ``spec`` order) -> a KeyedJaggedTensor with one id per sample and field."""
    import torch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    return KeyedJaggedTensor.from_lengths_sync(  # KJT values are key-major: [F, B] flattened
        keys=spec.categorical_names, values=ids.flatten(), lengths=torch.ones(ids.numel(), dtype=torch.int32)
    )


def make_batches(spec: Any, batch: int, count: int, zipf: float, seed: int) -> list[Any]:
    """``count`` Criteo-shaped torchrec Batches of ``batch`` rows: Zipf ids in [1, rows-1], one id per field."""
    import numpy as np
    import torch
    from torchrec.datasets.utils import Batch

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        cols = []
        for f in spec.categorical:
            span = f.vocab_size - 2  # ids 1 .. vocab_size - 2 (0 = PAD, vocab_size - 1 = OOV)
            rank = (rng.zipf(zipf, size=batch) - 1) % span  # 0 = hottest
            cols.append((rank * 2654435761) % span + 1)  # scatter hot ids over the table
        kjt = one_id_per_field(spec, torch.from_numpy(np.stack(cols).astype(np.int64)))
        dense = torch.from_numpy(np.log1p(rng.lognormal(1.0, 1.5, size=(batch, NUM_DENSE))).astype(np.float32))
        labels = torch.from_numpy((rng.random(batch) < 0.25).astype(np.float32))
        out.append(Batch(dense_features=dense, sparse_features=kjt, labels=labels))
    return out


def random_batch(spec: Any, batch_size: int, generator: Any) -> Any:
    """A torchrec ``Batch`` on ``spec`` (a FeatureSpec): one uniform random id per field (never PAD or OOV),
    uniform dense features, ~30% positive labels."""
    import torch
    from torchrec.datasets.utils import Batch

    ids = torch.stack([torch.randint(1, max(2, f.vocab_size - 1), (batch_size,), generator=generator)
                       for f in spec.categorical])
    kjt = one_id_per_field(spec, ids)
    dense = torch.rand(batch_size, len(spec.dense), generator=generator)
    labels = (torch.rand(batch_size, generator=generator) < 0.3).float()
    return Batch(dense_features=dense, sparse_features=kjt, labels=labels)
