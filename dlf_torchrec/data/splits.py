"""Which split (train / valid / test) each raw row goes to.

Splits come from separate ``valid``/``test`` files when given; else each line of ``train`` goes to
train/valid/test with probabilities ``split``, decided by a seeded hash of the line's content (its bytes without
the ``\\n`` / ``\\r\\n`` terminator; :func:`line_uniform`). The split of a row is therefore a function of its bytes
and ``split_seed`` only: inserting or deleting rows never moves another row, identical rows share a split, and the
assignment does not depend on chunking, worker count or compression.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "valid", "test")
# Recorded in meta.json (``split_rule``); preprocessed data of another rule is stale (data/fingerprint.py).
SPLIT_RULE = "content-hash-v1"
_M64 = (1 << 64) - 1
# Odd base of the polynomial over a line's 8-byte words.
_BASE = 0x9E3779B97F4A7C15
# Lines hashed per numpy pass, and words read per pass over them: temporaries stay cache-sized (about 1 MiB).
_BLOCK_LINES = 2048
_WINDOW_WORDS = 64
# _KEEP[r]: 0xFF for the first r bytes of a window, then 0 (zeroes what follows a line's last byte).
_KEEP = (np.arange(8 * _WINDOW_WORDS)[None, :] < np.arange(8 * _WINDOW_WORDS + 1)[:, None]).astype(np.uint8) * 255
_powers = np.ones(1, dtype=np.uint64)


def content_ends(buf: bytes | np.ndarray, line_start: np.ndarray) -> np.ndarray:
    """End (exclusive, before ``\\n`` / ``\\r\\n``) int64 [n] of each line, given the start of EVERY line of ``buf``
    in order (the last line may lack its ``\\n``)."""
    a = np.frombuffer(buf, dtype=np.uint8) if isinstance(buf, bytes) else buf
    ends = np.empty(len(line_start), dtype=np.int64)
    ends[:-1] = line_start[1:] - 1
    if len(ends):
        ends[-1] = len(a) - 1 if len(a) and a[-1] == 10 else len(a)
        cr = (ends > line_start) & (a[np.maximum(ends - 1, 0)] == 13)
        ends -= cr
    return ends


def _power_table(n: int) -> np.ndarray:
    """BASE**k mod 2**64 for k < n (uint64; grown on demand and cached)."""
    global _powers
    if len(_powers) < n:
        steps = np.full(max(n, 2 * len(_powers)), _BASE, dtype=np.uint64)
        steps[0] = 1
        _powers = np.cumprod(steps, dtype=np.uint64)  # wraps mod 2**64
    return _powers[:n]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (in place on a fresh uint64 array)."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _block_sums(a: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """sum_k word_k * BASE**k mod 2**64 per line over its little-endian 8-byte words (the last one zero padded).

    Each pass reads a window of up to ``_WINDOW_WORDS`` words of every line that reaches it, as rows of a matrix.
    """
    counts = (lengths + 7) >> 3
    n_words = int(counts.max(initial=0))
    lo, hi = int(starts.min()), int((starts + lengths).max())
    padded = np.zeros(hi - lo + 8 * _WINDOW_WORDS, dtype=np.uint8)
    padded[:hi - lo] = a[lo:hi]
    pows = _power_table(n_words)
    acc = np.zeros(len(starts), dtype=np.uint64)
    for k in range(0, n_words, _WINDOW_WORDS):
        width = min(n_words - k, _WINDOW_WORDS)
        sel = np.flatnonzero(counts > k)
        # Row r: the 8 * width bytes from byte r of the block (a view; indexing copies only the rows taken).
        rows = np.lib.stride_tricks.as_strided(padded, shape=(len(padded) - 8 * width + 1, 8 * width), strides=(1, 1))
        b = rows[starts[sel] - lo + 8 * k]
        b &= _KEEP[:, :8 * width][np.minimum(lengths[sel] - 8 * k, 8 * width)]
        w = b.view("<u8").astype(np.uint64, copy=False)
        w *= pows[k:k + width]
        acc[sel] += w.sum(axis=1, dtype=np.uint64)
    return acc


def line_hashes(seed: int, buf: bytes | np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Seeded 64-bit hash uint64 [n] of the bytes ``buf[starts[i]:ends[i]]`` of each line: a function of those bytes
    and ``seed`` only (not of where the line is)."""
    a = np.frombuffer(buf, dtype=np.uint8) if isinstance(buf, bytes) else buf
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(ends, dtype=np.int64) - starts
    out = np.empty(len(starts), dtype=np.uint64)
    for b in range(0, len(starts), _BLOCK_LINES):
        out[b:b + _BLOCK_LINES] = _block_sums(a, starts[b:b + _BLOCK_LINES], lengths[b:b + _BLOCK_LINES])
    out ^= np.uint64((seed * 0xD1B54A32D192ED03 + 0x8CB92BA72F3D8DD7) & _M64)
    out += lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return _mix(out)


def line_uniform(seed: int, buf: bytes | np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Deterministic U[0, 1) float64 [n] per line from ``seed`` and the line's content ``buf[starts:ends]``."""
    return (line_hashes(seed, buf, starts, ends) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def random_splits(ratios: tuple[float, float, float], seed: int, buf: bytes | np.ndarray, starts: np.ndarray,
                  ends: np.ndarray) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) int64 [n] of the lines ``buf[starts[i]:ends[i]]`` (content without
    terminator; see :func:`content_ends`)."""
    u = line_uniform(seed, buf, starts, ends)
    cum = np.cumsum(ratios)
    last = max(i for i, r in enumerate(ratios) if r > 0)
    return np.minimum(np.searchsorted(cum, u, side="right"), last)


def check_ratios(split: list[float] | tuple[float, ...]) -> tuple[float, float, float]:
    """``dataset.split`` as three floats; raises ValueError unless three non-negative ratios summing to 1."""
    ratios = tuple(float(r) for r in split)
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"dataset.split: expected three non-negative ratios summing to 1, got {split}")
    return ratios  # type: ignore[return-value]
