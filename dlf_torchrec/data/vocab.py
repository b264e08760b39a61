"""Fitting vocabularies: token counts over the training rows, then the tokens seen at least ``min_count`` times.

The ids these tokens get and the ``vocab.json`` encoding are in :mod:`dlf_torchrec.data.features`.
"""

from __future__ import annotations

import numpy as np

from dlf_torchrec.data.features import distinct
from dlf_torchrec.data.parse import concat_keys


class KeyCounter:
    """Token counts of one field, merged in bulk with numpy (amortised: merge when the buffer outgrows the total)."""

    def __init__(self) -> None:
        self.keys: np.ndarray | None = None
        self.counts = np.zeros(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_n = 0

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Add ``counts`` [u] occurrences of the distinct ``keys`` [u]."""
        if len(keys):
            self._pending.append((keys, counts))
            self._pending_n += len(keys)
            if self._pending_n > max(1 << 18, len(self.counts)):
                self._merge()

    def _merge(self) -> None:
        parts = ([(self.keys, self.counts)] if self.keys is not None else []) + self._pending
        self._pending, self._pending_n = [], 0
        if not parts:
            return
        keys = concat_keys([k for k, _ in parts])
        counts = np.concatenate([c for _, c in parts])
        uniq, inv = distinct(keys)
        total = np.bincount(inv, weights=counts, minlength=len(uniq)).astype(np.int64)
        seen = total > 0
        uniq, total = uniq[seen], total[seen]
        order = np.argsort(uniq, kind="stable")
        self.keys, self.counts = uniq[order], total[order]

    def vocab(self, min_count: int) -> np.ndarray:
        """Sorted keys with count >= min_count."""
        self._merge()
        if self.keys is None:
            return np.zeros(0, dtype=np.uint64)
        return self.keys[self.counts >= min_count]


def chunk_counts(fields: list[tuple[np.ndarray, np.ndarray]], rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per field (distinct keys [u], row index into them [m]): (present keys, counts) over the selected ``rows``
    (bool [m]); missing tokens (0 / b'') are not counted."""
    counts = []
    for uniq, inv in fields:
        c = np.bincount(inv[rows], minlength=len(uniq))
        keep = (c > 0) & (uniq != (b"" if uniq.dtype.kind == "S" else 0))
        counts.append((uniq[keep], c[keep]))
    return counts
