"""Multi-valued (``sequence``) fields: schema keys, the per-row item parser, jagged arrays (docs/data.md#multi-valued).

A bag column's value is split on its ``separator`` into items; empty items are dropped (so an empty value is an
empty bag, length 0); weighted bags hold ``token:weight`` items (the weight a finite decimal number); ``max_len``
keeps the last ``max_len`` items. Tokens are looked up per item in the vocabulary of the bag's table (its own, or
that of its ``share_embedding`` field), with the same min_count / OOV rule as single-valued fields.

Jagged arrays: a bag field of m rows is ``lengths`` int [m] plus ``values`` [sum(lengths)] (row-major: row 0's
items, then row 1's, ...) and, when weighted, ``weights`` float32 [sum(lengths)].
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlf_torchrec.data.schema import BagSpec, Column, SchemaError

BAG_KEYS = ("separator", "max_len", "pooling", "weighted", "share_embedding")
_WEIGHT_RE = re.compile(rb"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def bag_spec(c: dict[str, Any], key: str) -> BagSpec:
    """The :class:`BagSpec` of csv column mapping ``c`` (``key``: its place in the schema, for errors)."""
    sep = c.get("separator", "^")
    if not isinstance(sep, str) or len(sep) != 1 or sep in "\n\r\x00":
        raise SchemaError(f"{key}.separator: expected one character (not newline/NUL), got {sep!r}")
    max_len = c.get("max_len")
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise SchemaError(f"{key}.max_len: expected a positive integer, got {max_len!r}")
    weighted = c.get("weighted", False)
    if not isinstance(weighted, bool):
        raise SchemaError(f"{key}.weighted: expected true/false, got {weighted!r}")
    pooling = c.get("pooling", "sum" if weighted else "mean")
    if pooling not in ("sum", "mean"):
        raise SchemaError(f"{key}.pooling: expected sum or mean, got {pooling!r}")
    share = c.get("share_embedding")
    if share is not None and (not isinstance(share, str) or not share):
        raise SchemaError(f"{key}.share_embedding: expected a field name, got {share!r}")
    if weighted and sep == ":":
        raise SchemaError(f"{key}.separator: ':' separates a weighted item's token from its weight")
    return BagSpec(sep.encode(), max_len, pooling, weighted, share)


def check_shares(cols: list[Column], delimiter: str | None, keys: list[str] | None = None) -> None:
    """Raise :class:`SchemaError` unless every ``share_embedding`` names a categorical or sequence column that owns
    its table (no chains), and the bags of one table pool alike (and no separator is the ``delimiter``, when given).
    ``keys``: each column's config key for messages (default ``schema.columns[i]``)."""
    kinds = {c.name: c for c in cols}
    pooling: dict[str, tuple[str, str]] = {}
    for i, c in enumerate(cols):
        if c.bag is None:
            continue
        key = keys[i] if keys else f"schema.columns[{i}]"
        if delimiter is not None and c.bag.separator == delimiter.encode():
            raise SchemaError(f"{key}.separator: {delimiter!r} is also the schema's delimiter")
        table = c.bag.share_embedding or c.name
        target = kinds.get(table)
        if target is None or target.kind not in ("categorical", "sequence"):
            raise SchemaError(f"{key}.share_embedding: {table!r} is not a categorical or sequence column")
        if target.bag is not None and target.bag.share_embedding:
            raise SchemaError(f"{key}.share_embedding: {table!r} itself shares {target.bag.share_embedding!r}'s "
                              f"table; name {target.bag.share_embedding!r} instead")
        seen = pooling.setdefault(table, (c.bag.pooling, c.name))
        if seen[0] != c.bag.pooling:
            raise SchemaError(f"{key}.pooling: {c.name!r} pools by {c.bag.pooling} but {seen[1]!r} shares table "
                              f"{table!r} with pooling {seen[0]} (one table, one pooling)")


# ----------------------------------------------------------------------------------------------- parsing


def split_items(p: bytes, bag: BagSpec) -> list[bytes]:
    """A raw value -> its non-empty items (the last ``max_len`` of them)."""
    items = [t for t in p.split(bag.separator) if t]
    if bag.max_len is not None and len(items) > bag.max_len:
        items = items[len(items) - bag.max_len:]
    return items


def item_weight(item: bytes) -> tuple[bytes, float] | None:
    """``token:weight`` -> (token, weight); None when the weight is missing, not a number or not finite (the token
    is everything before the last ``:``)."""
    token, sep, w = item.rpartition(b":")
    if not sep or not _WEIGHT_RE.fullmatch(w):
        return None
    value = float(w)
    return (token, value) if math.isfinite(value) else None


@dataclass
class BagColumn:
    """One bag field of m rows: lengths int64 [m], keys [T] (packed uint64 or ``S``), weights float32 [T] or None."""

    lengths: np.ndarray
    keys: np.ndarray
    weights: np.ndarray | None


def gather(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jagged rows ``rows`` [k] (-1 = an empty padding row) of a field with row offsets int64 [n + 1] -> (lengths
    int64 [k], positions int64 [sum(lengths)] of their items in the values array, row after row)."""
    safe = np.maximum(rows, 0)
    starts = offsets[safe]
    lengths = np.where(rows >= 0, offsets[safe + 1] - starts, 0)
    total = int(lengths.sum())
    ends = np.cumsum(lengths)
    positions = np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)
    return lengths, positions


def select_rows(lengths: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The item mask bool [T] of the rows selected by ``mask`` bool [m] of a field with ``lengths`` [m]."""
    return np.repeat(mask, lengths)
