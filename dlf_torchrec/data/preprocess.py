"""Raw files -> preprocessed dataset directory (shards + vocab.json + meta.json), streaming and vectorised.

Usage::

    python -m dlf_torchrec.data.preprocess --config configs/criteo/dcnv2.yaml [dataset.min_count=10 ...]

Pipeline (memory bounded by ``chunk_rows``, not by input size; the vocabularies are the only thing that grows):

1. Pass 1 over the TRAIN input: chunks of ``chunk_rows`` lines are parsed (:func:`parse.parse_chunk`), rows are
   assigned to splits, and token counts of the train rows are accumulated per field.
2. Vocabulary (FuxiCTR rule, docs/data.md#vocabulary; :mod:`~dlf_torchrec.data.vocab`): tokens with count >=
   ``min_count`` are kept and numbered 1..K (:mod:`~dlf_torchrec.data.features`: ids, PAD, OOV, numeric transforms).
3. Pass 2 over every input: parse again, map tokens to ids, append to ``<split>/*.bin``; ``vocab.json``, then
   ``meta.json`` are written last (``meta.json`` is deleted first, so an interrupted run never looks complete).

Splits: ``valid``/``test`` files when given (then no random split), else each line of ``train`` goes to
train/valid/test with probabilities ``split`` by a seeded hash of the line's content (:mod:`~dlf_torchrec.data.
splits`: deterministic, streaming, independent of the line's position, chunking, worker count and compression).
Bad rows: ``skip`` counts them by reason and keeps the first 10 as ``file:line: reason``; ``fail`` raises
:class:`~dlf_torchrec.data.reading.BadRowError`. Inputs ending in ``.gz`` are read through gzip
(:mod:`~dlf_torchrec.data.reading`).

Parallelism: plain files are cut into byte ranges of about ``chunk_rows`` lines that worker processes (one per
core, for inputs over 32 MiB) read, parse and featurise themselves; pass 1 caches each featurised chunk under
``output_dir/.cache`` so pass 2 does not parse the train file again; results are consumed in input order.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import multiprocessing
import os
import pickle
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from dlf_torchrec import cli, io
from dlf_torchrec.config import DatasetConfig
from dlf_torchrec.data.features import Vocab, distinct, featurize, output_fields, token_strings
from dlf_torchrec.data.fingerprint import input_fingerprints, stale_reasons
from dlf_torchrec.data.formats import FORMATS
from dlf_torchrec.data.meta import META_FILE, VOCAB_FILE, BagField, CategoricalField, DatasetMeta, SplitInfo
from dlf_torchrec.data.parse import parse_chunk
from dlf_torchrec.data.reading import (
    DataError,
    FileChunk,
    Rejections,
    RejectList,
    file_chunks,
    file_schema,
    header_bytes,
    report_rejections,
)
from dlf_torchrec.data.schema import Schema
from dlf_torchrec.data.shards import Bags, ShardWriter
from dlf_torchrec.data.sidetables import dataset_schema
from dlf_torchrec.data.splits import SPLIT_RULE, SPLITS, check_ratios, content_ends, random_splits
from dlf_torchrec.data.vocab import KeyCounter, chunk_counts

# Inputs smaller than this are processed in-process (a worker pool costs more than it saves).
POOL_MIN_BYTES = 32 << 20
_T = TypeVar("_T")


# ----------------------------------------------------------------------------------------------- plan


@dataclass
class _Plan:
    """Everything a chunk job needs (pickled once into each worker)."""

    schema: Schema
    file_schemas: list[Schema]  # per file: ``schema`` in that file's column order (its header's)
    numeric: str  # bucketize | dense
    ratios: tuple[float, float, float] | None  # random split, or None when splits come from files
    split_seed: int
    files: list[tuple[str, int]]  # (path, split index for file splits; -1 = random)

    def row_splits(self, file_idx: int, buf: bytes, line_start: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Split index (0 train, 1 valid, 2 test) int8 [m] of the lines ``rows`` [m] of a chunk ``buf`` of file
        ``file_idx`` whose lines start at ``line_start`` [n_lines] (random splits hash each line's content)."""
        fixed = self.files[file_idx][1]
        if fixed >= 0:
            return np.full(len(rows), fixed, dtype=np.int8)
        assert self.ratios is not None
        ends = content_ends(buf, line_start)
        return random_splits(self.ratios, self.split_seed, buf, line_start[rows], ends[rows]).astype(np.int8)


# ------------------------------------------------------------------------------------ chunk jobs


@dataclass
class _Features:
    """One parsed chunk, featurised: labels float32 [m], split index int8 [m], dense float32 [m, D] and per
    categorical field its distinct keys [u] with each row's index into them, uint16/int32 [m]; per bag field its
    lengths [m], (distinct keys, each item's index into them) and weights float32 [items] or None; joined bool
    [m, side tables]: whether each row's key was found in each side table."""

    n_lines: int
    rejected: RejectList
    labels: np.ndarray
    splits: np.ndarray
    fields: list[tuple[np.ndarray, np.ndarray]]
    dense: np.ndarray
    bags: list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray | None]]
    joined: np.ndarray


def _featurize(plan: _Plan, job: FileChunk) -> _Features:
    """Read, parse and featurise a chunk; rejections carry chunk-relative line indices."""
    buf, _ = job.read()
    pc = parse_chunk(plan.file_schemas[job.file_idx], buf)
    keys, dense = featurize(pc, plan.numeric)
    splits = plan.row_splits(job.file_idx, buf, pc.line_start, pc.ok_idx)
    bags = [(b.lengths, distinct(b.keys), b.weights) for b in pc.bags]
    return _Features(pc.n_lines, pc.rejected, pc.labels, splits, [distinct(k) for k in keys], dense, bags, pc.joined)


def _count_job(plan: _Plan, cache_dir: str | None, job: FileChunk) -> tuple[int, RejectList, list, str | None]:
    """Pass 1: (lines, rejections, per field (unique keys, counts) over the chunk's train rows, cache file).

    The featurised chunk is pickled to ``cache_dir`` so that pass 2 does not parse the train file again.
    """
    feats = _featurize(plan, job)
    train = feats.splits == 0
    counts = chunk_counts(feats.fields, train) + [chunk_counts([keys], np.repeat(train, lengths))[0]
                                                  for lengths, keys, _ in feats.bags]
    path = None
    if cache_dir is not None:
        path = os.path.join(cache_dir, f"f{job.file_idx}_c{job.chunk_idx}.pkl")
        with open(path, "wb") as f:
            pickle.dump(feats, f, protocol=pickle.HIGHEST_PROTOCOL)
    return feats.n_lines, feats.rejected, counts, path


def _transform_job(plan: _Plan, vocabs: list[Vocab], job: FileChunk | str) -> tuple[int, RejectList, dict]:
    """Pass 2 (a raw chunk or a pass-1 cache file): (lines, rejections, {split: (labels, sparse int32 [m, F],
    dense float32 [m, D], [Bags per bag field], rows without a match per side table int64 [J])}); ``vocabs``: per
    categorical field, then per bag field (its table's vocabulary)."""
    if isinstance(job, str):
        with open(job, "rb") as f:
            feats = pickle.load(f)
        os.remove(job)
    else:
        feats = _featurize(plan, job)
    ids = np.empty((len(feats.fields), len(feats.labels)), dtype=np.int32)  # field-major, transposed below
    n_cat = len(feats.fields)
    for j, (v, (uniq, inv)) in enumerate(zip(vocabs[:n_cat], feats.fields, strict=True)):
        np.take(v.ids(uniq), inv, out=ids[j])
    bags = [Bags(lengths, v.ids(uniq)[inv], weights)
            for v, (lengths, (uniq, inv), weights) in zip(vocabs[n_cat:], feats.bags, strict=True)]
    present = np.unique(feats.splits).tolist()
    out = {}
    for s in present:
        if len(present) == 1:
            out[s] = (feats.labels, np.ascontiguousarray(ids.T), feats.dense, bags, (~feats.joined).sum(axis=0))
        else:
            rows = feats.splits == s
            sel = np.flatnonzero(rows)
            out[s] = (feats.labels[sel], np.ascontiguousarray(ids[:, sel].T), feats.dense[sel],
                      [_select(b, rows) for b in bags], (~feats.joined[sel]).sum(axis=0))
    return feats.n_lines, feats.rejected, out


def _select(bag: Bags, rows: np.ndarray) -> Bags:
    """The rows ``rows`` (bool [m]) of a block of bags."""
    items = np.repeat(rows, bag.lengths)
    return Bags(bag.lengths[rows], bag.values[items], None if bag.weights is None else bag.weights[items])


_WORKER: dict[str, Any] = {}


def _init_worker(plan: _Plan, vocabs: list[Vocab] | None, cache: str | None) -> None:
    _WORKER["plan"], _WORKER["vocabs"], _WORKER["cache"] = plan, vocabs, cache


def _worker_count(job: FileChunk) -> Any:
    return _count_job(_WORKER["plan"], _WORKER["cache"], job)


def _worker_transform(job: FileChunk) -> Any:
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
    """An input path as the config gives it: YAML-relative paths were made absolute by the config loader, so a
    relative one here came from the command line or a dict and is relative to the current directory."""
    if os.path.exists(path):
        return path
    raise FileNotFoundError(f"dataset.{key}: input file not found: {path}")


# ------------------------------------------------------------------------------------------ driver


def _progress(enabled: bool, total: int | None, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=" rows", unit_scale=True, disable=not (enabled and sys.stderr.isatty()))


def _make_plan(cfg: DatasetConfig) -> _Plan:
    if not cfg.train:
        raise ValueError("dataset.train: required (the raw training file)")
    files = [(_resolve(cfg.train, "train"), -1 if not (cfg.valid or cfg.test) else 0)]
    if cfg.valid:
        files.append((_resolve(cfg.valid, "valid"), 1))
    if cfg.test:
        files.append((_resolve(cfg.test, "test"), 2))
    schema = dataset_schema(cfg)  # side tables joined: the schema predict builds too
    file_schemas = [file_schema(path, schema) for path, _ in files]  # header mismatches fail before any work
    ratios = check_ratios(cfg.split) if files[0][1] == -1 else None
    return _Plan(schema, file_schemas, cfg.numeric, ratios, cfg.split_seed, files)  # type: ignore[arg-type]


def preprocess(cfg: DatasetConfig, *, workers: int | None = None) -> DatasetMeta:
    """Preprocess ``cfg`` into ``cfg.output_dir``; returns the written :class:`DatasetMeta`.

    ``workers``: processes for chunk work (None = one per core when the input is large, else in-process).
    """
    if not io.is_local(cfg.output_dir):
        return _on_local_copy(cfg, lambda local: preprocess(local, workers=workers))
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


@dataclass
class _FileCounts:
    path: str
    read: int
    rejections: Rejections


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


def _preprocess(cfg: DatasetConfig, plan: _Plan, workers: int, cache: str, t0: float) -> DatasetMeta:
    out = cfg.output_dir
    inputs = input_fingerprints(cfg, _resolve)  # before reading: a file changed meanwhile then looks stale next time
    names, dense_names = output_fields(plan.schema, plan.numeric)
    bag_cols = plan.schema.bag_columns
    # One vocabulary per table: each categorical field's, and each bag field's that does not share another's.
    tables = names + [c.name for c in bag_cols if c.bag and not c.bag.share_embedding]
    table_of = names + [c.bag.share_embedding or c.name for c in bag_cols if c.bag]
    # Pass 1: token counts over train rows (train file only); featurised chunks are cached for pass 2.
    train_path = plan.files[0][0]
    counters = {t: KeyCounter() for t in tables}
    pass1_lines = 0
    cached: list[str] = []
    check = Rejections("fail") if cfg.bad_rows == "fail" else None
    first_line = 2 if header_bytes(train_path, plan.file_schemas[0]) else 1
    with _progress(cfg.progress, None, "count") as bar:
        jobs = file_chunks(train_path, 0, plan.file_schemas[0], cfg.chunk_rows)
        for n_lines, rejected, counts, path in _run_jobs(jobs, lambda j: _count_job(plan, cache, j), _worker_count,
                                                         workers, (plan, None, cache)):
            if check is not None:
                check.add(train_path, first_line + pass1_lines, rejected)
            for t, (k, n) in zip(table_of, counts, strict=True):  # a shared table counts every field it serves
                counters[t].add(k, n)
            pass1_lines += n_lines
            cached.append(path)
            bar.update(n_lines)
    table_vocabs = {t: Vocab(c.vocab(cfg.min_count)) for t, c in counters.items()}
    vocabs = [table_vocabs[t] for t in table_of]
    del counters

    # Pass 2: map and write.
    splits = [SPLITS[i] for i, r in enumerate(plan.ratios) if r > 0] if plan.ratios else [
        SPLITS[s] for _, s in plan.files]
    writer = ShardWriter(out, splits, len(names), len(dense_names),
                         tuple(bool(c.bag and c.bag.weighted) for c in bag_cols))
    rejections = Rejections(cfg.bad_rows)
    files: list[_FileCounts] = []
    positives = dict.fromkeys(splits, 0)
    unmatched = {s: np.zeros(len(plan.schema.joins), dtype=np.int64) for s in splits}
    total = pass1_lines if len(plan.files) == 1 else None
    try:
        with _progress(cfg.progress, total, "write") as bar:
            for file_idx, (path, _) in enumerate(plan.files):
                layout = plan.file_schemas[file_idx]
                jobs: Iterator[Any] = iter(cached) if file_idx == 0 else file_chunks(path, file_idx, layout,
                                                                                      cfg.chunk_rows)
                line = 2 if header_bytes(path, layout) else 1
                counts = _FileCounts(path, 0, Rejections(cfg.bad_rows))
                for n_lines, rejected, parts in _run_jobs(jobs, lambda j: _transform_job(plan, vocabs, j),
                                                          _worker_transform, workers, (plan, vocabs, None)):
                    counts.rejections.add(path, line, rejected)
                    line += n_lines
                    for s, (labels, sparse, dense, bags, missing) in sorted(parts.items()):
                        writer.append(SPLITS[s], labels, sparse, dense, bags)
                        positives[SPLITS[s]] += int((labels > 0.5).sum())
                        unmatched[SPLITS[s]] += missing
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
    vocab_json = {t: token_strings(v.keys) for t, v in table_vocabs.items()}
    io.write_json(os.path.join(out, VOCAB_FILE), vocab_json, indent=None)
    meta = DatasetMeta(
        name=cfg.name,
        source_format=cfg.format,
        categorical=[CategoricalField(n, len(v.keys) + 2) for n, v in zip(names, vocabs[:len(names)], strict=True)],
        dense=dense_names,
        splits={s: SplitInfo(writer.rows[s], positives[s], writer.bag_values[s] if bag_cols else None)
                for s in splits},
        rows_read=rows_read,
        rows_written=rows_written,
        rows_rejected=rejections.total,
        rejected_by_reason=dict(rejections.by_reason),
        rejected_examples=rejections.examples,
        dataset_config=dataclasses.asdict(cfg),
        inputs=inputs,
        split_rule=SPLIT_RULE if plan.ratios else None,
        bags=[BagField(c.name, len(table_vocabs[t].keys) + 2, t, c.bag.pooling, c.bag.weighted)
              for c, t in zip(bag_cols, table_of[len(names):], strict=True) if c.bag],
        side_tables=[{"file": j.file, "key": j.key, "columns": [c.name for c in j.columns], "rows": len(j.rows),
                      "unmatched": {s: int(unmatched[s][i]) for s in splits}}
                     for i, j in enumerate(plan.schema.joins)],
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
          f"rejected {meta.rows_rejected:,}; {len(meta.categorical)} categorical fields, "
          f"{f'{len(meta.bags)} bag fields, ' if meta.bags else ''}total vocab {vocab:,}, "
          f"{len(meta.dense)} dense -> {out}", file=sys.stderr)
    report_rejections("[preprocess]", meta.rejected_by_reason, meta.rejected_examples)
    for t in meta.side_tables:
        missing = ", ".join(f"{s} {n:,}" for s, n in t["unmatched"].items())
        print(f"[preprocess]   side table {t['file']} ({t['rows']:,} rows, key {t['key']}): rows without a match "
              f"(empty values): {missing}", file=sys.stderr)


def ensure_preprocessed(cfg: DatasetConfig) -> str:
    """Preprocess ``cfg`` unless ``output_dir/meta.json`` holds exactly its data; returns ``output_dir``.

    ``meta.json`` records the dataset section and each raw input's fingerprint (:mod:`~dlf_torchrec.data.
    fingerprint`); when either differs the data is preprocessed again, never silently reused.

    Generated formats (``synthetic``) first write their raw file (:attr:`Format.generate
    <dlf_torchrec.data.formats.base.Format.generate>`), then preprocess it, then add what ``Format.finish`` writes;
    an existing dataset missing that (``Format.is_complete``) is built again.
    """
    out = cfg.output_dir
    if not io.is_local(out):
        _on_local_copy(cfg, ensure_preprocessed)
        return out
    fmt = FORMATS[cfg.format]
    if os.path.exists(os.path.join(out, META_FILE)):
        reasons = stale_reasons(cfg, _resolve)
        if not reasons and (fmt.is_complete is None or fmt.is_complete(out)):
            return out
        if reasons:
            print(f"[preprocess] {out} is stale ({'; '.join(reasons)}): preprocessing again", file=sys.stderr)
    preprocess(fmt.generate(cfg) if fmt.generate is not None else cfg)
    if fmt.finish is not None:
        fmt.finish(cfg, out)
    return out


def local_copy(cfg: DatasetConfig) -> str:
    """The local directory to memory-map the preprocessed ``cfg.output_dir`` from: the directory itself, or, for
    an object-store URI, its local copy under :func:`dlf_torchrec.io.cache_dir` (:func:`dlf_torchrec.io.stage_dir`:
    downloaded again whenever the remote ``meta.json`` differs from the copy's)."""
    return cfg.output_dir if io.is_local(cfg.output_dir) else io.stage_dir(cfg.output_dir, META_FILE)


def _on_local_copy(cfg: DatasetConfig, build: Callable[[DatasetConfig], _T]) -> _T:
    """Run ``build`` on the local copy of the object-store dataset ``cfg.output_dir``; if it wrote a new
    ``meta.json``, upload the copy (``meta.json`` last: the remote dataset never looks ready half-uploaded)."""
    uri = cfg.output_dir
    local = io.stage_dir(uri, META_FILE)
    marker = os.path.join(local, META_FILE)
    before = io.read_bytes(marker) if os.path.exists(marker) else None
    result = build(dataclasses.replace(cfg, output_dir=local))
    if os.path.exists(marker) and io.read_bytes(marker) != before:
        print(f"[preprocess] uploading {local} -> {uri}", file=sys.stderr)
        io.publish_dir(local, uri, META_FILE, skip=(".cache", "baselines"))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = cli.ArgumentParser("preprocess", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=None, help="experiment YAML (default: the synthetic DCNv2 config)")
    ap.add_argument("--force", action="store_true", help="re-run even if output_dir/meta.json exists")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: auto)")
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. dataset.min_count=10")
    args = ap.parse_args(argv)
    return cli.run("preprocess", lambda: _preprocess_cli(args), args.debug)


def _preprocess_cli(args: argparse.Namespace) -> int:
    from dlf_torchrec.config import load_config

    # Only the dataset section matters here; the model section is the trainer's to validate.
    cfg = load_config(args.config, [o if "." in o.split("=")[0] else f"dataset.{o}" for o in args.overrides],
                      validate_model=False)
    ds = cfg.dataset
    if args.force:
        io.remove(os.path.join(ds.output_dir, META_FILE))
    if FORMATS[ds.format].generate is not None:  # generated input: made with the dataset, once
        ensure_preprocessed(ds)
    else:
        preprocess(ds, workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
