"""Vectorised building blocks of the per-format fast parsers (see :func:`dlf_torchrec.data.parse.parse_chunk`).

A fast parser accepts the lines of a buffer that it can validate and decode with numpy alone; every other line
goes through the reference parser (:func:`dlf_torchrec.data.parse.parse_line`), which is also where rejection
reasons come from. Each format module (:mod:`dlf_torchrec.data.formats`) declares its :class:`FastParser`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Lines longer than this always take the per-row path (bounds the fast path's per-column memory).
MAX_FAST_LINE = 1024

_HEX_LUT = np.zeros(256, dtype=bool)
for _c in b"0123456789abcdefABCDEF":
    _HEX_LUT[_c] = True
_HEX_LUT[0] = True  # zero padding beyond the token (NUL bytes inside lines never reach the fast path)
_ONES8 = np.uint64(0x0101010101010101)
_ASCII0 = np.uint64(0x3030303030303030)
_HI_NIB = np.uint64(0xF0F0F0F0F0F0F0F0)
_SIX = np.uint64(0x0606060606060606)
# MASK[l]: keeps the first l bytes of a left-aligned (big-endian) 8-byte window; l >= 8 keeps all.
MASK = np.array([0] + [((1 << (8 * n)) - 1) << (8 * (8 - n)) for n in range(1, 9)] + [(1 << 64) - 1],
                 dtype=np.uint64)
# _ZFILL[l]: ASCII '0' in the 8 - l high bytes (right-aligned number of l digits gets leading zeros).
_ZFILL = np.array([0x3030303030303030 & ~((1 << (8 * n)) - 1) for n in range(9)], dtype=np.uint64)


# Appended to a buffer: room for the last 8-byte window, then the one-byte field ``0`` a dropped label column reads.
_TAIL = b"\x00" * 8 + b"0" + b"\x00" * 8


class Fields:
    """Field boundaries of the lines of a buffer that have exactly ``n_cols`` delimited fields (eligible lines)
    and packed 8-byte windows of fields.

    ``absent``: a column missing from the lines (the label of unlabelled input, :meth:`Schema.without_label`): the
    fields get one more column at that position, reading ``0`` on every line, so that a format's fast parser reads
    the lines as the labelled lines with label 0, which is how the reference parser reads unlabelled rows.
    """

    def __init__(self, buf: bytes, delim: int, n_cols: int, forbid: bytes = b"", absent: int | None = None) -> None:
        a = np.frombuffer(buf, dtype=np.uint8)
        seps = np.flatnonzero((a == delim) | (a == 10))
        nl_k = np.flatnonzero(a[seps] == 10)  # index into seps of each line end
        n = len(nl_k)
        nl = seps[nl_k]
        start = np.empty(n, dtype=np.int64)
        start[:1] = 0
        start[1:] = nl[:-1] + 1
        short = nl - start <= MAX_FAST_LINE
        regular = len(seps) == n * n_cols and bool(np.all(nl_k == np.arange(n_cols - 1, len(seps), n_cols)))
        forbid += b"\x00"
        has_forbidden = any(c in buf for c in (forbid[i:i + 1] for i in range(len(forbid))))
        if regular and not has_forbidden and bool(short.all()):
            ei = np.arange(n)
            end = seps.reshape(n, n_cols)
        else:
            fields = np.diff(nl_k, prepend=-1)
            elig = (fields == n_cols) & short
            if has_forbidden:
                bad = np.isin(a, np.frombuffer(forbid, dtype=np.uint8))
                elig[np.searchsorted(nl, np.flatnonzero(bad))] = False
            ei = np.flatnonzero(elig)
            end = seps[nl_k[ei][:, None] - (n_cols - 1) + np.arange(n_cols)]
        if b"\r" in buf:  # a CR right before the newline belongs to the terminator, not to the last field
            cr = a[np.maximum(nl[ei] - 1, 0)] == 13
            end = end.copy()
            end[:, -1] -= cr & (nl[ei] > start[ei])
        beg = np.empty_like(end)
        beg[:, 0] = start[ei]
        beg[:, 1:] = end[:, :-1] + 1
        ln = end - beg
        if absent is not None:
            beg = np.insert(beg, absent, len(buf) + 8, axis=1)  # the "0" of _TAIL
            ln = np.insert(ln, absent, 1, axis=1)
        self.n_lines = n
        self.line_start, self.line_end = start, nl
        self.eligible = ei
        self.beg, self.len = beg, ln
        padded = buf + _TAIL
        # 8-byte big-endian windows starting at every byte offset (unaligned strided view, no copy).
        self._win = np.ndarray((len(padded) - 7,), dtype=">u8", buffer=padded, strides=(1,))

    def window(self, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """Packed first 8 bytes of the given fields, zeroed beyond the field: (uint64 [m, k], lengths [m, k])."""
        beg, ln = self.beg[:, cols], self.len[:, cols]
        w = self._win[beg].astype(np.uint64)
        return w & MASK[np.minimum(ln, 9)], ln


def label01(f: Fields, col: int) -> tuple[np.ndarray, np.ndarray]:
    k, ln = f.window(slice(col, col + 1))
    c = (k[:, 0] >> np.uint64(56)).astype(np.int64)
    return (ln[:, 0] == 1) & ((c == 48) | (c == 49)), (c - 48).astype(np.float32)


def swar_ints(k: np.ndarray, ln: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Packed ``-?[0-9]{1,8}`` fields -> (valid bool, value float64 with NaN for empty). Longer ones are invalid."""
    neg = (k >> np.uint64(56)) == 45
    k2 = np.where(neg, k << np.uint64(8), k)
    l2 = ln - neg
    ok = (ln <= 8) & ((ln == 0) | (l2 >= 1))
    l2c = np.clip(l2, 0, 8)
    r = k2 >> np.minimum(8 * (8 - l2c), 63).astype(np.uint64)
    v = r | _ZFILL[l2c]
    ok &= ((v & _HI_NIB) == _ASCII0) & (((v + _SIX) & _HI_NIB) == _ASCII0)
    d = v - _ASCII0
    d = ((d >> np.uint64(8)) & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(10) + (d & np.uint64(0x00FF00FF00FF00FF))
    d = ((d >> np.uint64(16)) & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(100) + (
        d & np.uint64(0x0000FFFF0000FFFF))
    d = (d >> np.uint64(32)) * np.uint64(10000) + (d & np.uint64(0xFFFFFFFF))
    val = d.astype(np.float64)
    val = np.where(neg, -val, val)
    return ok, np.where(ln == 0, np.nan, val)


def hex_ok(k: np.ndarray, ln: np.ndarray) -> np.ndarray:
    """[m, j] packed fields -> bool [m]: every field is empty or 1-8 hex digits."""
    kc = np.ascontiguousarray(k)
    flags = _HEX_LUT[kc.view(np.uint8)].view(np.uint64).reshape(k.shape)
    return ((flags == _ONES8) & (ln <= 8)).all(1)


# (accepted bool [m], labels float32 [m], numeric float64 [m, n_numeric], packed categorical keys uint64 [m, F]) of
# the eligible lines of a Fields (m = len(fields.eligible)).
FastResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class FastParser:
    """A format's vectorised parser: ``parse`` over the :class:`Fields` of a buffer split at ``delimiter`` (a byte
    value); lines containing any byte of ``forbid`` (or NUL) always take the per-row path."""

    parse: Callable[[Fields], FastResult]
    delimiter: int
    forbid: bytes = b""
