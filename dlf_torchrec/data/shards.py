"""Binary per-split arrays of a preprocessed dataset (layout in :mod:`dlf_torchrec.data.meta`).

Writing appends raw little-endian chunks to ``<split>/{labels,sparse,dense}.bin`` (and, per bag field j,
``bag<j>.{lengths,values,weights}.bin``); reading memory-maps them with
the row counts taken from ``meta.json`` (a file whose size disagrees with the meta is an error, not a silent
truncation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from dlf_torchrec.data.meta import DatasetMeta

LABELS, SPARSE, DENSE = "labels.bin", "sparse.bin", "dense.bin"


def bag_files(j: int) -> tuple[str, str, str]:
    """File names of bag field ``j``: (lengths, values, weights)."""
    return f"bag{j}.lengths.bin", f"bag{j}.values.bin", f"bag{j}.weights.bin"


@dataclass
class Bags:
    """One bag field of a block of rows: lengths [m], ids [sum(lengths)], weights float32 [sum(lengths)] or None."""

    lengths: np.ndarray
    values: np.ndarray
    weights: np.ndarray | None = None


class ShardWriter:
    """Append chunks of rows to the binary files of each split (truncating them first)."""

    def __init__(self, directory: str, splits: list[str], num_categorical: int, num_dense: int,
                 weighted: tuple[bool, ...] = ()) -> None:
        self.directory = directory
        self.num_categorical, self.num_dense = num_categorical, num_dense
        self.weighted = weighted  # per bag field: whether it stores weights
        self.rows = {s: 0 for s in splits}
        self.bag_values = {s: [0] * len(weighted) for s in splits}
        self._files: dict[str, list] = {}
        for s in splits:
            d = os.path.join(directory, s)
            os.makedirs(d, exist_ok=True)
            names = [LABELS, SPARSE] + ([DENSE] if num_dense else [])
            for j, w in enumerate(weighted):
                names += list(bag_files(j)[:3 if w else 2])
            for stale in os.listdir(d):
                if (stale in (LABELS, SPARSE, DENSE) or stale.startswith("bag")) and stale not in names:
                    os.remove(os.path.join(d, stale))
            self._files[s] = [open(os.path.join(d, n), "wb") for n in names]

    def append(self, split: str, labels: np.ndarray, sparse: np.ndarray, dense: np.ndarray | None,
               bags: list[Bags] | None = None) -> None:
        """labels float32 [m], sparse int32 [m, num_categorical], dense float32 [m, num_dense], one :class:`Bags`
        per bag field."""
        m = len(labels)
        if sparse.shape != (m, self.num_categorical):
            raise ValueError(f"sparse shape {sparse.shape} != ({m}, {self.num_categorical})")
        files = self._files[split]
        files[0].write(np.ascontiguousarray(labels, dtype="<f4").tobytes())
        files[1].write(np.ascontiguousarray(sparse, dtype="<i4").tobytes())
        if self.num_dense:
            assert dense is not None and dense.shape == (m, self.num_dense), "dense shape mismatch"
            files[2].write(np.ascontiguousarray(dense, dtype="<f4").tobytes())
        out = iter(files[3 if self.num_dense else 2:])
        for j, (bag, w) in enumerate(zip(bags or [], self.weighted, strict=True)):
            assert len(bag.lengths) == m and int(bag.lengths.sum()) == len(bag.values), "bag shape mismatch"
            next(out).write(np.ascontiguousarray(bag.lengths, dtype="<i4").tobytes())
            next(out).write(np.ascontiguousarray(bag.values, dtype="<i4").tobytes())
            if w:
                assert bag.weights is not None and len(bag.weights) == len(bag.values), "bag weights mismatch"
                next(out).write(np.ascontiguousarray(bag.weights, dtype="<f4").tobytes())
            self.bag_values[split][j] += len(bag.values)
        self.rows[split] += m

    def close(self) -> None:
        for files in self._files.values():
            for f in files:
                f.close()
        self._files = {}


@dataclass
class SplitArrays:
    """Memory-mapped split: labels float32 [N], sparse int32 [N, F], dense float32 [N, D] (D may be 0); per bag
    field its row offsets int64 [N + 1], ids int32 [items] and weights float32 [items] (or None)."""

    labels: np.ndarray
    sparse: np.ndarray
    dense: np.ndarray
    bags: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def _map(path: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = os.path.getsize(path) if os.path.exists(path) else -1
    if size != expected:
        raise ValueError(f"{path}: {size} bytes on disk, meta.json expects {expected} (shape {shape}); "
                         f"re-run preprocessing")
    if expected == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def open_split(directory: str, split: str, meta: DatasetMeta | None = None) -> SplitArrays:
    """Memory-map one split of a preprocessed dataset directory."""
    meta = meta or DatasetMeta.load(directory)
    if split not in meta.splits:
        raise KeyError(f"{directory}: no split {split!r} (have {sorted(meta.splits)})")
    n, f, d = meta.splits[split].rows, len(meta.categorical), len(meta.dense)
    base = os.path.join(directory, split)
    labels = _map(os.path.join(base, LABELS), "<f4", (n,))
    sparse = _map(os.path.join(base, SPARSE), "<i4", (n, f))
    dense = _map(os.path.join(base, DENSE), "<f4", (n, d)) if d else np.zeros((n, 0), dtype=np.float32)
    bags = []
    for j, bag in enumerate(meta.bags):
        items = (meta.splits[split].bag_values or [0] * len(meta.bags))[j]
        lengths_f, values_f, weights_f = (os.path.join(base, f) for f in bag_files(j))
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(_map(lengths_f, "<i4", (n,)), out=offsets[1:])
        if offsets[-1] != items:
            raise ValueError(f"{lengths_f}: lengths sum to {offsets[-1]}, meta.json expects {items} items; "
                             f"re-run preprocessing")
        weights = _map(weights_f, "<f4", (items,)) if bag.weighted else None
        bags.append((offsets, _map(values_f, "<i4", (items,)), weights))
    return SplitArrays(labels, sparse, dense, bags)
