"""Binary per-split arrays of a preprocessed dataset (layout in :mod:`dlf_torchrec.data.meta`).

Writing appends raw little-endian chunks to ``<split>/{labels,sparse,dense}.bin``; reading memory-maps them with
the row counts taken from ``meta.json`` (a file whose size disagrees with the meta is an error, not a silent
truncation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from dlf_torchrec.data.meta import DatasetMeta

LABELS, SPARSE, DENSE = "labels.bin", "sparse.bin", "dense.bin"


class ShardWriter:
    """Append chunks of rows to the binary files of each split (truncating them first)."""

    def __init__(self, directory: str, splits: list[str], num_categorical: int, num_dense: int) -> None:
        self.directory = directory
        self.num_categorical, self.num_dense = num_categorical, num_dense
        self.rows = {s: 0 for s in splits}
        self._files: dict[str, list] = {}
        for s in splits:
            d = os.path.join(directory, s)
            os.makedirs(d, exist_ok=True)
            names = [LABELS, SPARSE] + ([DENSE] if num_dense else [])
            for stale in (LABELS, SPARSE, DENSE):
                if stale not in names and os.path.exists(os.path.join(d, stale)):
                    os.remove(os.path.join(d, stale))
            self._files[s] = [open(os.path.join(d, n), "wb") for n in names]

    def append(self, split: str, labels: np.ndarray, sparse: np.ndarray, dense: np.ndarray | None) -> None:
        """labels float32 [m], sparse int32 [m, num_categorical], dense float32 [m, num_dense]."""
        m = len(labels)
        if sparse.shape != (m, self.num_categorical):
            raise ValueError(f"sparse shape {sparse.shape} != ({m}, {self.num_categorical})")
        files = self._files[split]
        files[0].write(np.ascontiguousarray(labels, dtype="<f4").tobytes())
        files[1].write(np.ascontiguousarray(sparse, dtype="<i4").tobytes())
        if self.num_dense:
            assert dense is not None and dense.shape == (m, self.num_dense), "dense shape mismatch"
            files[2].write(np.ascontiguousarray(dense, dtype="<f4").tobytes())
        self.rows[split] += m

    def close(self) -> None:
        for files in self._files.values():
            for f in files:
                f.close()
        self._files = {}


@dataclass
class SplitArrays:
    """Memory-mapped split: labels float32 [N], sparse int32 [N, F], dense float32 [N, D] (D may be 0)."""

    labels: np.ndarray
    sparse: np.ndarray
    dense: np.ndarray

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
    return SplitArrays(labels, sparse, dense)
