"""Token -> id: the transforms from parsed raw columns to model inputs, shared by preprocessing and scoring.

Numeric columns: ``numeric: bucketize`` -> missing = 0, v > 2 -> floor(ln(v)^2), else int(v) (truncation), then
categorical fields (bucket 0, which includes missing, is the NA token and maps to OOV). ``numeric: dense`` ->
float32 features: missing -> 0, x > 0 -> log(1 + x), x <= 0 unchanged (tames the heavy tails).

Vocabulary ids (FuxiCTR rule): a field's kept tokens, sorted ascending (bytes order; numerically for bucketised
numbers), are numbered 1..K. PAD = 0 is never emitted. OOV = K + 1 = vocab_size - 1 is used for unknown, rare and
missing values. ``vocab.json`` holds each field's tokens as strings in id order (:func:`token_strings`,
:func:`vocab_keys`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlf_torchrec.data.meta import DatasetMeta
from dlf_torchrec.data.parse import ParsedChunk, keys_as_bytes, parse_chunk, tokens_to_keys
from dlf_torchrec.data.schema import Schema
from dlf_torchrec.data.shards import Bags

try:  # optional accelerator (hash-based factorize and lookup); results are identical without it
    import pandas as _pd
except ImportError:  # pragma: no cover
    _pd = None


class VocabMismatch(ValueError):
    """``vocab.json`` does not match ``meta.json`` (or the format's fields)."""


def bucketize(values: np.ndarray) -> np.ndarray:
    """float64 [...] (NaN = missing) -> int64 buckets: missing -> 0, v > 2 -> floor(ln(v)^2), else int(v)."""
    v = np.nan_to_num(values, nan=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        big = np.floor(np.log(np.maximum(v, 2.0)) ** 2)
    small = np.trunc(np.clip(v, -(2.0**62), 2.0))
    return np.where(v > 2, big, small).astype(np.int64)


def dense_transform(values: np.ndarray) -> np.ndarray:
    """float64 [...] (NaN = missing) -> float32: missing -> 0, x > 0 -> log(1 + x), x <= 0 unchanged."""
    v = np.nan_to_num(values, nan=0.0)
    return np.where(v > 0, np.log1p(np.maximum(v, 0.0)), v).astype(np.float32)


def output_fields(schema: Schema, numeric: str) -> tuple[list[str], list[str]]:
    """(categorical field names, dense field names) that ``schema`` yields under ``numeric`` (bucketised numeric
    columns come first among the categorical fields)."""
    if numeric == "bucketize":
        return list(schema.numeric_fields) + list(schema.categorical_fields), []
    return list(schema.categorical_fields), list(schema.numeric_fields)


def featurize(pc: ParsedChunk, numeric: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Parsed chunk -> (key array [m] per output categorical field (missing = 0 / b''), dense float32 [m, D]).

    ``numeric``: ``bucketize`` (numeric columns become the first categorical fields) or ``dense``.
    """
    if numeric == "bucketize":
        buckets = np.ascontiguousarray(bucketize(pc.numeric).T)
        keys = [buckets[j] for j in range(buckets.shape[0])] + pc.categorical
        return keys, np.zeros((len(pc.labels), 0), dtype=np.float32)
    return list(pc.categorical), dense_transform(pc.numeric)


def _narrow(inv: np.ndarray, n: int) -> np.ndarray:
    """Indices into n distinct keys as uint16 when they fit (halves the pass-1 cache), else int32."""
    return inv.astype(np.uint16 if n <= 1 << 16 else np.int32)


def distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """keys [m] -> (distinct candidate keys [u], inverse uint16/int32 [m]) with ``uniq[inv] == keys``.

    Uses pandas' hash-based factorize when available (several times faster than numpy's sort for the typical
    low-cardinality field); the result is order-agnostic downstream, so both paths give identical datasets.
    """
    if keys.dtype.kind == "i" and len(keys):
        lo, hi = int(keys.min()), int(keys.max())
        if hi - lo < 1 << 16:  # small integer range (bucketised numbers): no hashing or sorting needed
            return np.arange(lo, hi + 1, dtype=np.int64), _narrow(keys - lo, hi - lo + 1)
    if _pd is not None and keys.dtype.kind in "iu":
        codes, uniq = _pd.factorize(keys)
        return np.asarray(uniq, dtype=keys.dtype), _narrow(codes, len(uniq))
    uniq, inv = np.unique(keys, return_inverse=True)
    return uniq, _narrow(inv.reshape(-1), len(uniq))


def lookup(vocab: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Token keys [m] -> ids int32 [m]: position in the sorted ``vocab`` + 1, or OOV = len(vocab) + 1."""
    k = len(vocab)
    if k == 0:
        return np.ones(len(keys), dtype=np.int32)
    if vocab.dtype.kind == "i" and keys.dtype.kind == "i" and int(vocab[-1]) - int(vocab[0]) < 1 << 20:
        lo = int(vocab[0])
        table = np.full(int(vocab[-1]) - lo + 2, k + 1, dtype=np.int32)
        table[vocab - lo] = np.arange(1, k + 1, dtype=np.int32)
        return table[np.clip(keys - lo, -1, len(table) - 1)]  # -1 and the last slot are OOV
    if (vocab.dtype.kind == "S") != (keys.dtype.kind == "S"):
        vocab, keys = keys_as_bytes(vocab), keys_as_bytes(keys)
    pos = np.searchsorted(vocab, keys)
    hit = vocab[np.minimum(pos, k - 1)] == keys
    return np.where(hit, pos + 1, k + 1).astype(np.int32)


class Vocab:
    """A field's sorted vocabulary keys with a lazily built pandas hash index (when pandas is available)."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = keys
        self._index: Any = None

    def ids(self, keys: np.ndarray) -> np.ndarray:
        """Token keys [m] -> ids int32 [m] (1..K, OOV = K + 1)."""
        v = self.keys
        k = len(v)
        if _pd is None or k == 0 or v.dtype.kind == "i" or v.dtype.kind != keys.dtype.kind or len(keys) < 64:
            return lookup(v, keys)
        if self._index is None:
            self._index = _pd.Index(v)
        pos = self._index.get_indexer(keys)
        return np.where(pos >= 0, pos + 1, k + 1).astype(np.int32)


def token_strings(vocab: np.ndarray) -> list[str]:
    """A field's sorted vocabulary keys -> its ``vocab.json`` token strings (id order)."""
    if vocab.dtype.kind == "i":
        return [str(v) for v in vocab.tolist()]
    return [b.decode("utf-8", "backslashreplace") for b in keys_as_bytes(vocab).tolist()]


def vocab_keys(tokens: list[str], numeric: bool) -> np.ndarray:
    """Inverse of :func:`token_strings`: a field's token strings (id order) -> its sorted vocabulary keys, as
    :func:`lookup` takes them. ``numeric``: the field holds bucketised numbers (int64 keys), else token bytes
    (packed uint64 when all fit in 8 bytes, else an ``S`` array)."""
    if numeric:
        return np.array([int(t) for t in tokens], dtype=np.int64)
    return tokens_to_keys([t.encode("utf-8", "surrogatepass") for t in tokens])


@dataclass
class EncodedLines:
    """A block of raw lines as model inputs: ``n_lines`` lines, of which the m accepted ones (line index
    ``ok_idx`` [m]) have sparse ids int64 [m, F], dense float32 [m, D] and one :class:`Bags` of int64 ids per bag
    field; ``rejected``: (line index, reason, detail) of every other line, from the reference parser."""

    n_lines: int
    ok_idx: np.ndarray
    sparse: np.ndarray
    dense: np.ndarray
    rejected: list[tuple[int, str, str]]
    bags: list[Bags]


@dataclass
class Encoder:
    """Raw lines -> model inputs, exactly as preprocessing maps the training data."""

    schema: Schema
    numeric: str
    vocabs: list[Vocab]
    bag_vocabs: list[Vocab] = dataclasses.field(default_factory=list)  # per bag field: its table's vocabulary
    # Per side table of ``schema.joins``: accepted rows so far whose key the table lacks (docs/data.md#side-tables).
    unmatched: list[int] = dataclasses.field(default_factory=list)

    @classmethod
    def for_dataset(cls, schema: Schema, numeric: str, meta: DatasetMeta, vocab: dict[str, list[str]]) -> Encoder:
        """The encoder of a preprocessed dataset (its ``meta.json`` and ``vocab.json``) for raw input ``schema``."""
        bucketised = set(schema.numeric_fields) if numeric == "bucketize" else set()
        keys = [vocab_keys(vocab[f.name], f.name in bucketised) for f in meta.categorical]
        for f, v in zip(meta.categorical, keys, strict=True):
            if len(v) + 2 != f.vocab_size or (len(v) > 1 and not bool(np.all(v[1:] > v[:-1]))):
                raise VocabMismatch(f"vocab.json field {f.name}: {len(v)} tokens (sorted: no) do not match "
                                    f"meta.json vocab_size {f.vocab_size}")
        vocabs = {f.name: Vocab(k) for f, k in zip(meta.categorical, keys, strict=True)}
        for b in meta.bags:
            if b.table not in vocabs:
                tokens = vocab_keys(vocab[b.table], False)
                if len(tokens) + 2 != b.vocab_size:
                    raise VocabMismatch(f"vocab.json table {b.table}: {len(tokens)} tokens do not match meta.json "
                                        f"vocab_size {b.vocab_size}")
                vocabs[b.table] = Vocab(tokens)
        return cls(schema, numeric, [vocabs[f.name] for f in meta.categorical], [vocabs[b.table] for b in meta.bags])

    def encode(self, lines: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, str, str]],
                                                  list[Bags]]:
        """(line index of each accepted line [m], sparse ids int64 [m, F], dense float32 [m, D], rejections,
        one :class:`Bags` of int64 ids per bag field) of raw ``lines`` (terminators optional)."""
        batch = self.encode_buffer(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines))
        if batch.n_lines != len(lines):
            raise AssertionError(f"parser saw {batch.n_lines} lines in a chunk of {len(lines)}")
        return batch.ok_idx, batch.sparse, batch.dense, batch.rejected, batch.bags

    def encode_buffer(self, buf: bytes) -> EncodedLines:
        """The model inputs of a buffer of whole raw lines (``\\n``-terminated; the last terminator optional)."""
        pc = parse_chunk(self.schema, buf)
        keys, dense = featurize(pc, self.numeric)
        missing = (~pc.joined).sum(axis=0).tolist()
        self.unmatched = [a + b for a, b in zip(self.unmatched or [0] * len(missing), missing, strict=True)]
        sparse = np.empty((len(pc.ok_idx), len(self.vocabs)), dtype=np.int64)
        for j, (vocab, k) in enumerate(zip(self.vocabs, keys, strict=True)):
            sparse[:, j] = vocab.ids(k)
        bags = [Bags(b.lengths, vocab.ids(b.keys).astype(np.int64), b.weights)
                for vocab, b in zip(self.bag_vocabs, pc.bags, strict=True)]
        return EncodedLines(pc.n_lines, pc.ok_idx, sparse, dense, pc.rejected, bags)
