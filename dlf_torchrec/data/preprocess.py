"""Raw files -> preprocessed dataset directory (shards + vocab.json + meta.json), streaming and vectorised.

Usage::

    python -m dlf_torchrec.data.preprocess --config configs/criteo/dcnv2.yaml [dataset.min_count=10 ...]

Pipeline (memory bounded by ``chunk_rows``, not by input size; the vocabularies are the only thing that grows):

1. Pass 1 over the TRAIN input: chunks of ``chunk_rows`` lines are parsed (:func:`parse.parse_chunk`), rows are
   assigned to splits, and token counts of the train rows are accumulated per field.
2. Vocabulary (FuxiCTR rule, MODELS.md 3.1): tokens with count >= ``min_count`` are kept, sorted ascending (bytes
   order; numerically for bucketised numbers) and numbered 1..K. PAD = 0 is never emitted. OOV = K + 1 =
   vocab_size - 1 is used for unknown, rare and missing values.
3. Pass 2 over every input: parse again, map tokens to ids, append to ``<split>/*.bin``; ``vocab.json``, then
   ``meta.json`` are written last (``meta.json`` is deleted first, so an interrupted run never looks complete).

Numeric columns (Criteo I1..I13, csv ``numeric``): ``numeric: bucketize`` -> missing = 0, v > 2 ->
floor(ln(v)^2), else int(v) (truncation), then categorical fields (bucket 0, which includes missing, is the NA
token and maps to OOV). ``numeric: dense`` -> float32 features in ``dense.bin``: missing -> 0, x > 0 -> log(1 + x),
x <= 0 unchanged (tames the heavy tails).

Splits: ``valid``/``test`` files when given (then no random split), else each line of ``train`` goes to
train/valid/test with probabilities ``split``, decided by a counter-based RNG (splitmix64 of ``split_seed``, the
file and the line's byte offset; :func:`line_uniform`): deterministic, streaming, and independent of chunking,
worker count and compression. Bad rows: ``skip`` counts them by reason and keeps the first 10 as
``file:line: reason``; ``fail`` raises :class:`BadRowError`. Inputs ending in ``.gz`` are read through gzip.

Parallelism: plain files are cut into byte ranges of about ``chunk_rows`` lines that worker processes (one per
core, for inputs over 32 MiB) read, parse and featurise themselves; pass 1 caches each featurised chunk under
``output_dir/.cache`` so pass 2 does not parse the train file again; results are consumed in input order.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gzip
import hashlib
import json
import multiprocessing
import os
import pickle
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from dlf_torchrec.config import REPO_ROOT, DatasetConfig
from dlf_torchrec.data.meta import META_FILE, VOCAB_FILE, CategoricalField, DatasetMeta, SplitInfo
from dlf_torchrec.data.parse import (
    ParsedChunk,
    concat_keys,
    detect_libfm_fields,
    keys_as_bytes,
    parse_chunk,
    tokens_to_keys,
)
from dlf_torchrec.data.schema import Schema, schema_for
from dlf_torchrec.data.shards import ShardWriter

try:  # optional accelerator (hash-based factorize); results are identical without it
    import pandas as _pd
except ImportError:  # pragma: no cover
    _pd = None

SPLITS = ("train", "valid", "test")
MAX_EXAMPLES = 10
# Inputs smaller than this are processed in-process (a worker pool costs more than it saves).
POOL_MIN_BYTES = 32 << 20


class DataError(ValueError):
    """The data cannot give a meaningful run (no usable rows, too many bad rows, a one-class validation split)."""


class BadRowError(ValueError):
    """A malformed row under ``bad_rows: fail``; the message is ``file:line: reason``."""


# ----------------------------------------------------------------------------------------------- plan


@dataclass
class _Plan:
    """Everything a chunk job needs (pickled once into each worker)."""

    schema: Schema
    numeric: str  # bucketize | dense
    ratios: tuple[float, float, float] | None  # random split, or None when splits come from files
    split_seed: int
    files: list[tuple[str, int]]  # (path, split index for file splits; -1 = random)

    @property
    def categorical_names(self) -> list[str]:
        num = list(self.schema.numeric_fields) if self.numeric == "bucketize" else []
        return num + list(self.schema.categorical_fields)

    @property
    def dense_names(self) -> list[str]:
        return list(self.schema.numeric_fields) if self.numeric == "dense" else []


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


def featurize(pc: ParsedChunk, numeric: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Parsed chunk -> (key array [m] per output categorical field (missing = 0 / b''), dense float32 [m, D]).

    ``numeric``: ``bucketize`` (numeric columns become the first categorical fields) or ``dense``. Public so that
    scoring raw files (:mod:`dlf_torchrec.predict`) applies exactly the transform the dataset was built with.
    """
    if numeric == "bucketize":
        buckets = np.ascontiguousarray(bucketize(pc.numeric).T)
        keys = [buckets[j] for j in range(buckets.shape[0])] + pc.categorical
        return keys, np.zeros((len(pc.labels), 0), dtype=np.float32)
    return list(pc.categorical), dense_transform(pc.numeric)


def _features(plan: _Plan, pc: ParsedChunk) -> tuple[list[np.ndarray], np.ndarray]:
    """Parsed chunk -> (key array [m] per output categorical field (missing = 0 / b''), dense float32 [m, D])."""
    return featurize(pc, plan.numeric)


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


def _row_splits(plan: _Plan, file_idx: int, offset: int, pc: ParsedChunk) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) of each accepted row [m]."""
    fixed = plan.files[file_idx][1]
    if fixed >= 0:
        return np.full(len(pc.ok_idx), fixed, dtype=np.int64)
    assert plan.ratios is not None
    u = line_uniform(plan.split_seed, file_idx, pc.line_start[pc.ok_idx] + offset)
    cum = np.cumsum(plan.ratios)
    last = max(i for i, r in enumerate(plan.ratios) if r > 0)
    return np.minimum(np.searchsorted(cum, u, side="right"), last)


# ------------------------------------------------------------------------------------ chunk jobs


@dataclass
class _Job:
    """One chunk: in memory (``buf``, gzip input) or the lines starting in bytes [lo, hi) of ``path`` (read by
    the worker). ``offset``: byte offset of the chunk in the (decompressed) file, known once read."""

    file_idx: int
    chunk_idx: int
    buf: bytes | None = None
    offset: int = 0
    path: str = ""
    lo: int = 0
    hi: int = 0
    base: int = 0

    def read(self) -> tuple[bytes, int]:
        """(chunk bytes, their byte offset in the file)."""
        if self.buf is not None:
            return self.buf, self.offset
        with open(self.path, "rb") as f:
            start = self.lo
            if self.lo > self.base:  # skip the line that started in the previous chunk
                f.seek(self.lo - 1)
                start = self.lo - 1 + len(f.readline())
            if start >= self.hi:
                return b"", start
            f.seek(start)
            data = f.read(self.hi - start)
            if data and not data.endswith(b"\n"):  # complete the last line started inside [lo, hi)
                data += f.readline()
            return data, start


_RejectList = list[tuple[int, str, str]]  # (line index within the chunk, reason, detail)


@dataclass
class _Features:
    """One parsed chunk, featurised: labels float32 [m], split index int8 [m], dense float32 [m, D] and per
    categorical field its distinct keys [u] with each row's index into them, uint16/int32 [m]."""

    n_lines: int
    rejected: _RejectList
    labels: np.ndarray
    splits: np.ndarray
    fields: list[tuple[np.ndarray, np.ndarray]]
    dense: np.ndarray


def _narrow(inv: np.ndarray, n: int) -> np.ndarray:
    """Indices into n distinct keys as uint16 when they fit (halves the pass-1 cache), else int32."""
    return inv.astype(np.uint16 if n <= 1 << 16 else np.int32)


def _distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _featurize(plan: _Plan, job: _Job) -> _Features:
    """Read, parse and featurise a chunk; rejections carry chunk-relative line indices."""
    buf, offset = job.read()
    pc = parse_chunk(plan.schema, buf)
    keys, dense = _features(plan, pc)
    splits = _row_splits(plan, job.file_idx, offset, pc).astype(np.int8)
    return _Features(pc.n_lines, pc.rejected, pc.labels, splits, [_distinct(k) for k in keys], dense)


def _count_job(plan: _Plan, cache_dir: str | None, job: _Job) -> tuple[int, _RejectList, list, str | None]:
    """Pass 1: (lines, rejections, per field (unique keys, counts) over the chunk's train rows, cache file).

    The featurised chunk is pickled to ``cache_dir`` so that pass 2 does not parse the train file again.
    """
    feats = _featurize(plan, job)
    train = feats.splits == 0
    counts = []
    for uniq, inv in feats.fields:
        c = np.bincount(inv[train], minlength=len(uniq))
        keep = (c > 0) & (uniq != (b"" if uniq.dtype.kind == "S" else 0))
        counts.append((uniq[keep], c[keep]))
    path = None
    if cache_dir is not None:
        path = os.path.join(cache_dir, f"f{job.file_idx}_c{job.chunk_idx}.pkl")
        with open(path, "wb") as f:
            pickle.dump(feats, f, protocol=pickle.HIGHEST_PROTOCOL)
    return feats.n_lines, feats.rejected, counts, path


class _Vocab:
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


def _transform_job(plan: _Plan, vocabs: list[_Vocab], job: _Job | str) -> tuple[int, _RejectList, dict]:
    """Pass 2 (a raw chunk or a pass-1 cache file): (lines, rejections, {split: (labels, sparse int32 [m, F],
    dense float32 [m, D])})."""
    if isinstance(job, str):
        with open(job, "rb") as f:
            feats = pickle.load(f)
        os.remove(job)
    else:
        feats = _featurize(plan, job)
    ids = np.empty((len(feats.fields), len(feats.labels)), dtype=np.int32)  # field-major, transposed below
    for j, (v, (uniq, inv)) in enumerate(zip(vocabs, feats.fields, strict=True)):
        np.take(v.ids(uniq), inv, out=ids[j])
    present = np.unique(feats.splits).tolist()
    out = {}
    for s in present:
        if len(present) == 1:
            out[s] = (feats.labels, np.ascontiguousarray(ids.T), feats.dense)
        else:
            sel = np.flatnonzero(feats.splits == s)
            out[s] = (feats.labels[sel], np.ascontiguousarray(ids[:, sel].T), feats.dense[sel])
    return feats.n_lines, feats.rejected, out


_WORKER: dict[str, Any] = {}


def _init_worker(plan: _Plan, vocabs: list[_Vocab] | None, cache: str | None) -> None:
    _WORKER["plan"], _WORKER["vocabs"], _WORKER["cache"] = plan, vocabs, cache


def _worker_count(job: _Job) -> Any:
    return _count_job(_WORKER["plan"], _WORKER["cache"], job)


def _worker_transform(job: _Job) -> Any:
    return _transform_job(_WORKER["plan"], _WORKER["vocabs"], job)


def _run_jobs(jobs: Iterator[Any], local: Callable[[Any], Any], remote: Callable[[Any], Any],
              workers: int, initargs: tuple) -> Iterator[Any]:
    """Results of ``jobs`` in order; with workers > 1 at most 2 * workers chunks are in flight (bounded memory)."""
    if workers <= 1:
        for job in jobs:
            yield local(job)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
        pending: collections.deque = collections.deque()
        for job in jobs:
            pending.append(pool.apply_async(remote, (job,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ------------------------------------------------------------------------------------------- input


def _resolve(path: str, key: str) -> str:
    if os.path.exists(path):
        return path
    if not os.path.isabs(path) and (REPO_ROOT / path).exists():
        return str(REPO_ROOT / path)
    raise FileNotFoundError(f"dataset.{key}: input file not found: {path}")


def _open(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # type: ignore[return-value]


def _is_header(schema: Schema, line: bytes) -> bool:
    if schema.header is True:
        return True
    return schema.header == "auto" and line.startswith(schema.header_prefix)


READ_BYTES = 16 << 20


def _nth_newline(buf: bytes, n: int) -> int:
    """Offset of the n-th (1-based) newline of ``buf`` (which has at least n)."""
    if n <= 4096:
        pos = -1
        for _ in range(n):
            pos = buf.find(b"\n", pos + 1)
        return pos
    return int(np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)[n - 1])


def _header_bytes(path: str, schema: Schema) -> int:
    """Length of the header line to skip (0 if none)."""
    if not schema.header:
        return 0
    with _open(path) as f:
        first = f.readline()
    return len(first) if first and _is_header(schema, first) else 0


def _chunks(path: str, file_idx: int, schema: Schema, chunk_rows: int) -> Iterator[_Job]:
    """Chunks of one file (header skipped). Plain files: byte ranges of about ``chunk_rows`` lines (estimated from
    the first MiB), read by the workers themselves. Gzip: blocks of exactly ``chunk_rows`` lines read here."""
    base = _header_bytes(path, schema)
    if not path.endswith(".gz"):
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(base)
            sample = f.read(1 << 20)
        per_line = max(len(sample) / max(sample.count(b"\n"), 1), 1.0)
        step = max(int(chunk_rows * per_line), 1)
        for chunk_idx, lo in enumerate(range(base, size, step)):
            yield _Job(file_idx, chunk_idx, path=path, lo=lo, hi=min(lo + step, size), base=base)
        return
    with _open(path) as f:
        blocks: list[bytes] = []
        counts: list[int] = []
        offset = base
        if base:
            f.readline()
        total = sum(counts)
        eof = False
        chunk_idx = 0
        while True:
            if total < chunk_rows and not eof:
                block = f.read(READ_BYTES)
                if block:
                    blocks.append(block)
                    counts.append(block.count(b"\n"))
                    total += counts[-1]
                else:
                    eof = True
                continue
            if total >= chunk_rows:
                last, last_n = blocks[-1], counts[-1]
                need = chunk_rows - (total - last_n)
                cut = _nth_newline(last, need) + 1
                piece = b"".join(blocks[:-1]) + last[:cut]
                rest = last[cut:]
                blocks, counts = ([rest], [last_n - need]) if rest else ([], [])
                total = last_n - need
            else:  # end of file: the rest (a final line may lack its newline)
                piece = b"".join(blocks)
                blocks, counts, total = [], [], 0
                if not piece:
                    return
            yield _Job(file_idx, chunk_idx, buf=piece, offset=offset)
            chunk_idx += 1
            offset += len(piece)


def _first_data_line(path: str, schema_header: bool) -> bytes:
    with _open(path) as f:
        for i, line in enumerate(f):
            if i == 0 and schema_header:
                continue
            if line.strip():
                return line
    raise DataError(f"{path}: no data rows (empty file): cannot detect the number of libFM fields")


# ------------------------------------------------------------------------------------------ vocab


class KeyCounter:
    """Token counts of one field, merged in bulk with numpy (amortised: merge when the buffer outgrows the total)."""

    def __init__(self) -> None:
        self.keys: np.ndarray | None = None
        self.counts = np.zeros(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_n = 0

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
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
        uniq, inv = _distinct(keys)
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


def _token_strings(vocab: np.ndarray) -> list[str]:
    if vocab.dtype.kind == "i":
        return [str(v) for v in vocab.tolist()]
    return [b.decode("utf-8", "backslashreplace") for b in keys_as_bytes(vocab).tolist()]


def vocab_keys(tokens: list[str], numeric: bool) -> np.ndarray:
    """Inverse of the ``vocab.json`` encoding: a field's token strings (id order) -> its sorted vocabulary keys, as
    :func:`lookup` takes them. ``numeric``: the field holds bucketised numbers (int64 keys), else token bytes
    (packed uint64 when all fit in 8 bytes, else an ``S`` array)."""
    if numeric:
        return np.array([int(t) for t in tokens], dtype=np.int64)
    return tokens_to_keys([t.encode("utf-8", "surrogatepass") for t in tokens])


# ------------------------------------------------------------------------------------------ driver


class _Rejections:
    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.by_reason: collections.Counter[str] = collections.Counter()
        self.examples: list[str] = []
        self.total = 0

    def add(self, path: str, first_line: int, rejected: _RejectList) -> None:
        """Record a chunk's rejections; ``first_line`` is the 1-based line number of its first line."""
        for idx, reason, detail in rejected:
            line = first_line + idx
            text = f"{path}:{line}: {reason}" + (f" ({detail})" if detail else "")
            if self.policy == "fail":
                raise BadRowError(text)
            self.by_reason[reason] += 1
            self.total += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(text)

    def merge(self, other: _Rejections) -> None:
        self.by_reason.update(other.by_reason)
        self.total += other.total
        self.examples.extend(other.examples[:MAX_EXAMPLES - len(self.examples)])

    def top(self) -> str:
        """The three commonest reasons and the first example, for a one-line message."""
        reasons = ", ".join(f"{n:,} x {reason}" for reason, n in self.by_reason.most_common(3))
        return f"top reasons: {reasons}; e.g. {self.examples[0]}" if self.examples else "no rows rejected"


@dataclass
class _FileCounts:
    path: str
    read: int
    rejections: _Rejections


def _check_rows(cfg: DatasetConfig, files: list[_FileCounts], rows: dict[str, int]) -> None:
    """Raise :class:`DataError` naming the file when an input gave no rows or too many bad ones, or the train
    split got none."""
    for f in files:
        rejected = f.rejections.total
        if f.read == 0:
            raise DataError(f"{f.path}: no data rows (empty file, or a header only)")
        if rejected == f.read:
            raise DataError(f"{f.path}: all {f.read:,} rows rejected, 0 written (wrong dataset.format or delimiter?); "
                            f"{f.rejections.top()}")
        if rejected > cfg.max_bad_fraction * f.read:
            raise DataError(f"{f.path}: {rejected:,} of {f.read:,} rows rejected ({rejected / f.read:.2%}), over "
                            f"dataset.max_bad_fraction={cfg.max_bad_fraction:g}; {f.rejections.top()}")
    if rows.get("train", 1) == 0:
        raise DataError(f"{files[0].path}: the train split got 0 rows (dataset.split={cfg.split})")


def check_validation_split(meta: DatasetMeta, cfg: DatasetConfig) -> None:
    """Raise :class:`DataError` unless the validation split can be scored: rows of both classes (else AUC is NaN,
    no checkpoint is ever "best", and the run ends without a result)."""
    source = cfg.valid or cfg.train or cfg.output_dir
    info = meta.splits.get("valid")
    if info is None or info.rows == 0:
        raise DataError(f"{source}: the validation split is empty (dataset.split={cfg.split}); training needs one")
    if info.positives is not None and info.positives in (0, info.rows):
        raise DataError(f"{source}: the validation split has one class only ({info.rows:,} rows, all label "
                        f"{int(info.positives > 0)}): AUC is undefined; use more rows or another split")


def _progress(enabled: bool, total: int | None, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=" rows", unit_scale=True, disable=not (enabled and sys.stderr.isatty()))


def _make_plan(cfg: DatasetConfig) -> _Plan:
    fmt = "criteo" if cfg.format == "synthetic" else cfg.format
    if not cfg.train:
        raise ValueError("dataset.train: required (the raw training file)")
    files = [(_resolve(cfg.train, "train"), -1 if not (cfg.valid or cfg.test) else 0)]
    if cfg.valid:
        files.append((_resolve(cfg.valid, "valid"), 1))
    if cfg.test:
        files.append((_resolve(cfg.test, "test"), 2))
    libfm_fields = None
    if fmt == "libfm":
        libfm_fields = detect_libfm_fields(_first_data_line(files[0][0], False))
    schema = schema_for(fmt, csv_spec=cfg.schema, libfm_fields=libfm_fields)
    ratios = tuple(float(r) for r in cfg.split) if files[0][1] == -1 else None
    if ratios is not None and (len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6):
        raise ValueError(f"dataset.split: expected three non-negative ratios summing to 1, got {cfg.split}")
    return _Plan(schema, cfg.numeric, ratios, cfg.split_seed, files)  # type: ignore[arg-type]


def preprocess(cfg: DatasetConfig, *, workers: int | None = None) -> DatasetMeta:
    """Preprocess ``cfg`` into ``cfg.output_dir``; returns the written :class:`DatasetMeta`.

    ``workers``: processes for chunk work (None = one per core when the input is large, else in-process).
    """
    t0 = time.perf_counter()
    plan = _make_plan(cfg)
    if workers is None:
        size = sum(os.path.getsize(p) for p, _ in plan.files)
        workers = min(os.cpu_count() or 1, 8) if size >= POOL_MIN_BYTES else 1
    out = cfg.output_dir
    os.makedirs(out, exist_ok=True)
    if os.path.exists(os.path.join(out, META_FILE)):
        os.remove(os.path.join(out, META_FILE))

    cache = os.path.join(out, ".cache")
    shutil.rmtree(cache, ignore_errors=True)
    os.makedirs(cache)
    try:
        return _preprocess(cfg, plan, workers, cache, t0)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _preprocess(cfg: DatasetConfig, plan: _Plan, workers: int, cache: str, t0: float) -> DatasetMeta:
    out = cfg.output_dir
    inputs = _input_fingerprints(cfg)  # before reading: a file changed meanwhile then looks stale next time
    names = plan.categorical_names
    # Pass 1: token counts over train rows (train file only); featurised chunks are cached for pass 2.
    train_path = plan.files[0][0]
    counters = [KeyCounter() for _ in names]
    pass1_lines = 0
    cached: list[str] = []
    check = _Rejections("fail") if cfg.bad_rows == "fail" else None
    first_line = 2 if _header_bytes(train_path, plan.schema) else 1
    with _progress(cfg.progress, None, "count") as bar:
        jobs = _chunks(train_path, 0, plan.schema, cfg.chunk_rows)
        for n_lines, rejected, counts, path in _run_jobs(jobs, lambda j: _count_job(plan, cache, j), _worker_count,
                                                         workers, (plan, None, cache)):
            if check is not None:
                check.add(train_path, first_line + pass1_lines, rejected)
            for c, (k, n) in zip(counters, counts, strict=True):
                c.add(k, n)
            pass1_lines += n_lines
            cached.append(path)
            bar.update(n_lines)
    vocabs = [_Vocab(c.vocab(cfg.min_count)) for c in counters]
    del counters

    # Pass 2: map and write.
    splits = [SPLITS[i] for i, r in enumerate(plan.ratios) if r > 0] if plan.ratios else [
        SPLITS[s] for _, s in plan.files]
    writer = ShardWriter(out, splits, len(names), len(plan.dense_names))
    rejections = _Rejections(cfg.bad_rows)
    files: list[_FileCounts] = []
    positives = dict.fromkeys(splits, 0)
    total = pass1_lines if len(plan.files) == 1 else None
    try:
        with _progress(cfg.progress, total, "write") as bar:
            for file_idx, (path, _) in enumerate(plan.files):
                jobs: Iterator[Any] = iter(cached) if file_idx == 0 else _chunks(path, file_idx, plan.schema,
                                                                                  cfg.chunk_rows)
                line = 2 if _header_bytes(path, plan.schema) else 1
                counts = _FileCounts(path, 0, _Rejections(cfg.bad_rows))
                for n_lines, rejected, parts in _run_jobs(jobs, lambda j: _transform_job(plan, vocabs, j),
                                                          _worker_transform, workers, (plan, vocabs, None)):
                    counts.rejections.add(path, line, rejected)
                    line += n_lines
                    for s, (labels, sparse, dense) in sorted(parts.items()):
                        writer.append(SPLITS[s], labels, sparse, dense)
                        positives[SPLITS[s]] += int((labels > 0.5).sum())
                    counts.read += n_lines
                    bar.update(n_lines)
                rejections.merge(counts.rejections)
                files.append(counts)
    finally:
        writer.close()

    rows_read = sum(f.read for f in files)
    rows_written = sum(writer.rows.values())
    if rows_read != rows_written + rejections.total:
        raise AssertionError(f"row accounting: read {rows_read} != written {rows_written} + "
                             f"rejected {rejections.total}")
    _check_rows(cfg, files, dict(writer.rows))  # before meta.json: a failed dataset never looks ready
    vocab_json = {n: _token_strings(v.keys) for n, v in zip(names, vocabs, strict=True)}
    with open(os.path.join(out, VOCAB_FILE) + ".tmp", "w") as f:
        f.write(json.dumps(vocab_json))
    os.replace(os.path.join(out, VOCAB_FILE) + ".tmp", os.path.join(out, VOCAB_FILE))
    meta = DatasetMeta(
        name=cfg.name,
        source_format=cfg.format,
        categorical=[CategoricalField(n, len(v.keys) + 2) for n, v in zip(names, vocabs, strict=True)],
        dense=plan.dense_names,
        splits={s: SplitInfo(writer.rows[s], positives[s]) for s in splits},
        rows_read=rows_read,
        rows_written=rows_written,
        rows_rejected=rejections.total,
        rejected_by_reason=dict(rejections.by_reason),
        rejected_examples=rejections.examples,
        dataset_config=dataclasses.asdict(cfg),
        inputs=inputs,
    )
    meta.save(out)
    elapsed = time.perf_counter() - t0
    if cfg.progress:
        _summary(meta, out, elapsed)
    return meta


def _summary(meta: DatasetMeta, out: str, elapsed: float) -> None:
    splits = ", ".join(f"{k} {v.rows:,}" for k, v in meta.splits.items())
    vocab = sum(c.vocab_size for c in meta.categorical)
    print(f"[preprocess] {meta.name}: read {meta.rows_read:,} rows in {elapsed:.1f}s "
          f"({meta.rows_read / max(elapsed, 1e-9):,.0f} rows/s); wrote {meta.rows_written:,} ({splits}); "
          f"rejected {meta.rows_rejected:,}; {len(meta.categorical)} categorical fields, total vocab {vocab:,}, "
          f"{len(meta.dense)} dense -> {out}", file=sys.stderr)
    for reason, n in sorted(meta.rejected_by_reason.items()):
        print(f"[preprocess]   {n:,} x {reason}", file=sys.stderr)
    for ex in meta.rejected_examples:
        print(f"[preprocess]   e.g. {ex}", file=sys.stderr)


INPUT_KEYS = ("train", "valid", "test")
# Keys that do not change the preprocessed data (inputs are compared by fingerprint, not by how the path is spelled).
_UNCHECKED_KEYS = {"progress", "chunk_rows", "output_dir", "max_bad_fraction", *INPUT_KEYS}
FINGERPRINT_BYTES = 1 << 20


def input_fingerprint(path: str) -> dict[str, Any]:
    """Absolute path, size, mtime and the SHA-256 of the first and last MiB of a raw input file."""
    st = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(FINGERPRINT_BYTES))
        if st.st_size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, st.st_size - FINGERPRINT_BYTES))
            digest.update(f.read())
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256_first_last_mib": digest.hexdigest()}


def _input_fingerprints(cfg: DatasetConfig) -> dict[str, dict[str, Any]]:
    return {key: input_fingerprint(_resolve(getattr(cfg, key), key)) for key in INPUT_KEYS if getattr(cfg, key)}


def stale_reasons(cfg: DatasetConfig) -> list[str]:
    """Why ``cfg.output_dir`` does not hold ``cfg``'s preprocessed data (empty: it does).

    Compared: the dataset section (minus keys that do not change the data) and, except for generated synthetic
    data, each raw input's fingerprint."""
    try:
        meta = DatasetMeta.load(cfg.output_dir)
    except (OSError, ValueError, TypeError, KeyError) as e:
        return [f"meta.json unreadable ({e})"]
    old = {k: v for k, v in meta.dataset_config.items() if k not in _UNCHECKED_KEYS}
    new = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _UNCHECKED_KEYS}
    reasons = [f"dataset.{k} was {old.get(k)!r}, now {new.get(k)!r}" for k in sorted(old.keys() | new.keys())
               if old.get(k) != new.get(k)]
    if cfg.format != "synthetic":  # synthetic raw data is a function of the config, generated into output_dir
        recorded = meta.inputs
        for key, current in _input_fingerprints(cfg).items():
            before = recorded.get(key)
            if before is None:
                reasons.append(f"dataset.{key}: no fingerprint recorded")
            elif before != current:
                diff = ", ".join(k for k in current if before.get(k) != current[k])
                reasons.append(f"dataset.{key} {current['path']}: {diff} changed")
        reasons += [f"dataset.{key} removed" for key in recorded if not getattr(cfg, key)]
    return reasons


def ensure_preprocessed(cfg: DatasetConfig) -> str:
    """Preprocess ``cfg`` unless ``output_dir/meta.json`` holds exactly its data; returns ``output_dir``.

    ``meta.json`` records the dataset section and each raw input's fingerprint (:func:`input_fingerprint`); when
    either differs (:func:`stale_reasons`) the data is preprocessed again, never silently reused.
    Format ``synthetic``: first generates ``output_dir/raw/train.tsv`` (``synthetic_rows`` rows, seed
    ``synthetic_seed``) with :func:`dlf_torchrec.data.synthetic.generate_criteo_tsv`, then preprocesses it as Criteo.
    """
    out = cfg.output_dir
    if os.path.exists(os.path.join(out, META_FILE)):
        reasons = stale_reasons(cfg)
        if not reasons:
            return out
        print(f"[preprocess] {out} is stale ({'; '.join(reasons)}): preprocessing again", file=sys.stderr)
    if cfg.format == "synthetic":
        from dlf_torchrec.data.synthetic import generate_criteo_tsv

        raw = os.path.join(out, "raw", "train.tsv")
        os.makedirs(os.path.dirname(raw), exist_ok=True)
        generate_criteo_tsv(raw, cfg.synthetic_rows, cfg.synthetic_seed)
        cfg = dataclasses.replace(cfg, train=raw, valid=None, test=None)
    preprocess(cfg)
    return out


def clean(output_dir: str) -> None:
    """Remove a preprocessed dataset directory."""
    shutil.rmtree(output_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from dlf_torchrec.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=None, help="experiment YAML (default: the synthetic DCNv2 config)")
    ap.add_argument("--force", action="store_true", help="re-run even if output_dir/meta.json exists")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: auto)")
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. dataset.min_count=10")
    args = ap.parse_args(argv)
    # Only the dataset section matters here; the model section is the trainer's to validate.
    cfg = load_config(args.config, [o if "." in o.split("=")[0] else f"dataset.{o}" for o in args.overrides],
                      validate_model=False)
    ds = cfg.dataset
    if args.force and os.path.exists(os.path.join(ds.output_dir, META_FILE)):
        os.remove(os.path.join(ds.output_dir, META_FILE))
    try:
        if ds.format == "synthetic":
            ensure_preprocessed(ds)
        else:
            preprocess(ds, workers=args.workers)
    except DataError as e:
        print(f"preprocess: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
