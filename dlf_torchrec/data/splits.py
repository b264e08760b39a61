"""Which split (train / valid / test) each raw row goes to.

Splits come from separate ``valid``/``test`` files when given; else each line of ``train`` goes to
train/valid/test with probabilities ``split``, decided by a counter-based RNG (splitmix64 of ``split_seed``, the
file and the line's byte offset; :func:`line_uniform`): deterministic, streaming, and independent of chunking,
worker count and compression.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "valid", "test")
_M64 = (1 << 64) - 1


def line_uniform(seed: int, file_idx: int, offsets: np.ndarray) -> np.ndarray:
    """Deterministic U[0, 1) per line from (seed, file, byte offset of the line) via splitmix64, float64 [n].

    Depends on nothing else (not on chunking, workers or compression), so every run assigns the same rows.
    """
    mix = (seed * 0x9E3779B97F4A7C15 + (file_idx + 1) * 0xD1B54A32D192ED03) & _M64
    x = offsets.astype(np.uint64) + np.uint64(mix)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def random_splits(ratios: tuple[float, float, float], seed: int, file_idx: int, offsets: np.ndarray) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) int64 [n] of the lines at byte ``offsets`` [n] of file ``file_idx``."""
    u = line_uniform(seed, file_idx, offsets)
    cum = np.cumsum(ratios)
    last = max(i for i, r in enumerate(ratios) if r > 0)
    return np.minimum(np.searchsorted(cum, u, side="right"), last)


def check_ratios(split: list[float] | tuple[float, ...]) -> tuple[float, float, float]:
    """``dataset.split`` as three floats; raises ValueError unless three non-negative ratios summing to 1."""
    ratios = tuple(float(r) for r in split)
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"dataset.split: expected three non-negative ratios summing to 1, got {split}")
    return ratios  # type: ignore[return-value]
