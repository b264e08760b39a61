"""Score a raw Criteo / Avazu / libFM / CSV file with a trained run: one probability per input row, in input order.

Usage::

    python -m dlf_torchrec.predict --run runs/criteo_dcnv2 --input test.txt --output preds.txt
    zcat test.txt.gz | python -m dlf_torchrec.predict --run runs/criteo_dcnv2 --input - --output - > preds.txt

The run directory supplies ``config.yaml`` (written by the trainer), the dataset's ``meta.json`` + ``vocab.json``
(``dataset.output_dir`` of that config, or ``--data-dir``) and the checkpoint (``checkpoints/<name>``, default
``best``). Raw rows go through the same parser (:func:`dlf_torchrec.data.parse.parse_chunk`) and the same
featurisation (:func:`dlf_torchrec.data.preprocess.featurize` + :func:`~dlf_torchrec.data.preprocess.lookup`) as
preprocessing, then through the unsharded model on CPU in one process (no process group).

Labels: ``--label auto`` (default) looks at the first data line (the first of the first 100 lines with a plausible
column count): the schema's column count means labelled (the label is parsed and ignored), one column fewer means
unlabelled (e.g. Criteo's ``test.txt``, 39 columns; Avazu's
``test`` without ``click``). ``--label yes|no`` forces it.

Output: one probability per input data row (a header line is not a row), ``%.9g`` (float32 round-trips), in input
order; with ``--id-column NAME`` each line is ``<id>,<probability>`` under a header ``<NAME>,probability`` (e.g.
Avazu's ``id``). Malformed rows: ``--bad-rows fail`` (default) stops with ``file:line: reason``;
``--bad-rows skip`` writes ``nan`` for that row and reports the count on stderr. Rows in = rows out, always.
Memory is bounded by ``--batch-size`` rows; progress (tqdm) goes to stderr.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gzip
import itertools
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Literal

import numpy as np
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlf_torchrec.config import REPO_ROOT, ExperimentConfig, load_config
from dlf_torchrec.data.meta import VOCAB_FILE, DatasetMeta
from dlf_torchrec.data.parse import parse_chunk
from dlf_torchrec.data.preprocess import BadRowError, featurize, lookup, vocab_keys
from dlf_torchrec.data.schema import Schema, schema_for

FORMATS = ("criteo", "avazu", "libfm", "csv")
LabelMode = Literal["auto", "yes", "no"]
MAX_EXAMPLES = 10
# Lines looked at to decide --label auto (the first with a labelled or unlabelled column count decides).
HEAD_LINES = 100


class PredictError(RuntimeError):
    """A problem with the run, its data directory or the input (not a malformed row)."""


# ----------------------------------------------------------------------------------------------- the run


@dataclass
class Run:
    """A trained run as scoring needs it: its config, dataset meta, vocabularies and checkpoint path."""

    cfg: ExperimentConfig
    meta: DatasetMeta
    data_dir: str
    vocab: dict[str, list[str]]
    checkpoint: str

    @property
    def source_format(self) -> str:
        """Raw format of the training data (synthetic data is Criteo TSV)."""
        fmt = self.cfg.dataset.format
        return "criteo" if fmt == "synthetic" else fmt


def resolve_data_dir(cfg: ExperimentConfig, run_dir: str, override: str | None = None) -> str:
    """The preprocessed dataset directory: ``override``, else ``dataset.output_dir`` as given, relative to the
    current directory, the run directory's parent or the repository root (the first holding ``meta.json``)."""
    if override is not None:
        return override
    path = cfg.dataset.output_dir
    candidates = [path] if os.path.isabs(path) else [path, os.path.join(os.path.dirname(os.path.abspath(run_dir)),
                                                                         path), str(REPO_ROOT / path)]
    for c in candidates:
        if os.path.exists(os.path.join(c, "meta.json")):
            return c
    raise PredictError(f"dataset directory of the run not found (tried {', '.join(candidates)}); pass --data-dir")


def resolve_checkpoint(run_dir: str, checkpoint: str) -> str:
    """``checkpoint``: a name under ``<run>/checkpoints`` (``best``, ``step_00000120``) or a path."""
    path = checkpoint if os.path.isdir(checkpoint) else os.path.join(run_dir, "checkpoints", checkpoint)
    if not os.path.isdir(path):
        raise PredictError(f"checkpoint not found: {path}")
    return path


def load_run(run_dir: str, checkpoint: str = "best", data_dir: str | None = None) -> Run:
    """Read ``<run_dir>/config.yaml``, the dataset's ``meta.json`` and ``vocab.json``; locate the checkpoint."""
    config_path = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(config_path):
        raise PredictError(f"{config_path} not found: not a training run directory")
    cfg = load_config(config_path)
    directory = resolve_data_dir(cfg, run_dir, data_dir)
    meta = DatasetMeta.load(directory)
    with open(os.path.join(directory, VOCAB_FILE)) as f:
        vocab = json.load(f)
    return Run(cfg, meta, directory, vocab, resolve_checkpoint(run_dir, checkpoint))


def load_model(run: Run) -> nn.Module:
    """The unsharded model on CPU with the checkpoint's weights, in eval mode."""
    from dlf_torchrec.models.registry import build_model
    from dlf_torchrec.training.checkpoint import export_unsharded_state_dict

    cfg = run.cfg
    model = build_model(cfg.model_name, run.meta.feature_spec, cfg.features.embedding_dim, cfg.features.init_std,
                        cfg.model, device=torch.device("cpu"))
    model.load_state_dict(export_unsharded_state_dict(run.checkpoint, cfg, run.meta), strict=True)
    return model.eval()


# ------------------------------------------------------------------------------------------- schema


def base_schema(run: Run, fmt: str | None = None, csv_schema: str | None = None) -> Schema:
    """The labelled raw schema of the run's dataset (``fmt``/``csv_schema`` override the config's)."""
    fmt = fmt or run.source_format
    libfm_fields = len(run.meta.categorical) if fmt == "libfm" else None
    schema = schema_for(fmt, csv_spec=csv_schema or run.cfg.dataset.schema, libfm_fields=libfm_fields)
    produced = (list(schema.numeric_fields) if run.cfg.dataset.numeric == "bucketize" else []) + list(
        schema.categorical_fields)
    expected = [c.name for c in run.meta.categorical]
    if produced != expected:
        raise PredictError(f"format {fmt!r} yields fields {produced[:5]}... but the model was trained on "
                           f"{expected[:5]}... ({len(expected)} fields)")
    return schema


def without_label(schema: Schema) -> Schema:
    """The schema variant for unlabelled input: the label column removed (rows parse with label 0, ignored)."""
    columns = tuple(c for c in schema.columns if c.kind != "label")
    prefix = schema.header_prefix
    if prefix and schema.delimiter:  # e.g. Avazu "id,click" -> "id,hour"
        prefix = schema.delimiter.join(c.name for c in columns[:2]).encode()
    return dataclasses.replace(schema, columns=columns, format=f"{schema.format}_unlabelled", header_prefix=prefix)


def count_columns(schema: Schema, line: bytes) -> int:
    """Number of raw columns of ``line`` under ``schema``'s delimiter."""
    line = line.rstrip(b"\r\n")
    return len(line.split()) if schema.delimiter is None else len(line.split(schema.delimiter.encode()))


def input_schema(schema: Schema, first_line: bytes | None, label: LabelMode) -> Schema:
    """``schema`` or its unlabelled variant, as ``label`` says or (auto) as the first data line's column count says."""
    if label == "yes":
        return schema
    if label == "no":
        return without_label(schema)
    if first_line is None:
        return schema
    n = count_columns(schema, first_line)
    if n == schema.n_columns - 1:
        return without_label(schema)
    if n != schema.n_columns:
        raise PredictError(f"first data line has {n} columns; {schema.format} expects {schema.n_columns} "
                           f"(labelled) or {schema.n_columns - 1} (unlabelled)")
    return schema


def is_header(schema: Schema, line: bytes) -> bool:
    """Whether ``line`` (the first line of the input) is a header under ``schema``'s header rule."""
    if schema.header is True:
        return True
    return schema.header == "auto" and line.startswith(schema.header_prefix)


# --------------------------------------------------------------------------------------------- input


def open_input(path: str) -> IO[bytes]:
    """``-`` = stdin; ``.gz`` is read through gzip."""
    if path == "-":
        return sys.stdin.buffer
    if not os.path.exists(path):
        raise PredictError(f"input file not found: {path}")
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # type: ignore[return-value]


@dataclass
class Chunk:
    """Consecutive raw lines of the input; ``first_line`` is the 1-based line number of ``lines[0]``."""

    first_line: int
    lines: list[bytes]


def first_data_line(schema: Schema, lines: list[bytes]) -> bytes | None:
    """The first line of ``lines`` with the labelled or unlabelled column count of ``schema`` (so that a malformed
    first row does not decide), else the first non-blank line, else None."""
    counts = (schema.n_columns, schema.n_columns - 1)
    return next((line for line in lines if count_columns(schema, line) in counts),
                next((line for line in lines if line.strip()), None))


def read_chunks(lines: Iterator[bytes], chunk_rows: int, first_line: int) -> Iterator[Chunk]:
    """Chunks of at most ``chunk_rows`` lines (bounded memory)."""
    while True:
        block = list(itertools.islice(lines, chunk_rows))
        if not block:
            return
        yield Chunk(first_line, block)
        first_line += len(block)


# ------------------------------------------------------------------------------------------- features


@dataclass
class Encoder:
    """Raw chunk -> model inputs, exactly as preprocessing maps the training data."""

    schema: Schema
    numeric: str
    vocabs: list[np.ndarray]

    @classmethod
    def for_run(cls, run: Run, schema: Schema) -> Encoder:
        numeric = run.cfg.dataset.numeric
        bucketised = set(schema.numeric_fields) if numeric == "bucketize" else set()
        vocabs = [vocab_keys(run.vocab[f.name], f.name in bucketised) for f in run.meta.categorical]
        for f, v in zip(run.meta.categorical, vocabs, strict=True):
            if len(v) + 2 != f.vocab_size or (len(v) > 1 and not bool(np.all(v[1:] > v[:-1]))):
                raise PredictError(f"vocab.json field {f.name}: {len(v)} tokens (sorted: no) do not match meta.json "
                                   f"vocab_size {f.vocab_size}")
        return cls(schema, numeric, vocabs)

    def encode(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, str, str]]]:
        """(row index of each accepted line [m], sparse ids int64 [m, F], dense float32 [m, D], rejections)."""
        pc = parse_chunk(self.schema, b"".join(line if line.endswith(b"\n") else line + b"\n"
                                               for line in chunk.lines))
        if pc.n_lines != len(chunk.lines):
            raise AssertionError(f"parser saw {pc.n_lines} lines in a chunk of {len(chunk.lines)}")
        keys, dense = featurize(pc, self.numeric)
        sparse = np.empty((len(pc.ok_idx), len(self.vocabs)), dtype=np.int64)
        for j, (vocab, k) in enumerate(zip(self.vocabs, keys, strict=True)):
            sparse[:, j] = lookup(vocab, k)
        return pc.ok_idx, sparse, dense, pc.rejected


# ---------------------------------------------------------------------------------------------- model


def to_kjt(sparse: torch.Tensor, keys: list[str]) -> KeyedJaggedTensor:
    """ids int64 [B, F] -> KJT with one id per sample and key (the loader's layout)."""
    values = sparse.t().reshape(-1)
    return KeyedJaggedTensor(keys=keys, values=values, lengths=torch.ones(values.numel(), dtype=torch.int32))


@torch.no_grad()
def predict_proba(model: nn.Module, keys: list[str], dense: np.ndarray, sparse: np.ndarray) -> np.ndarray:
    """Probabilities float32 [B] of the unsharded model (sigmoid of the fp32 logits, as the trainer computes them)."""
    if len(sparse) == 0:
        return np.zeros(0, dtype=np.float32)
    out = model(torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)),
                to_kjt(torch.from_numpy(sparse), keys))
    return torch.sigmoid(out.logits.float()).numpy()


# --------------------------------------------------------------------------------------------- output


class BadRows:
    """Malformed rows: ``fail`` raises :class:`BadRowError` (``file:line: reason``), ``skip`` counts them."""

    def __init__(self, policy: str, name: str) -> None:
        self.policy, self.name = policy, name
        self.by_reason: collections.Counter[str] = collections.Counter()
        self.examples: list[str] = []

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def add(self, first_line: int, rejected: Iterable[tuple[int, str, str]]) -> None:
        for idx, reason, detail in rejected:
            text = f"{self.name}:{first_line + idx}: {reason}" + (f" ({detail})" if detail else "")
            if self.policy == "fail":
                raise BadRowError(text)
            self.by_reason[reason] += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(text)

    def report(self) -> None:
        if not self.total:
            return
        print(f"[predict] {self.total:,} malformed row(s) scored as nan", file=sys.stderr)
        for reason, n in sorted(self.by_reason.items()):
            print(f"[predict]   {n:,} x {reason}", file=sys.stderr)
        for ex in self.examples:
            print(f"[predict]   e.g. {ex}", file=sys.stderr)


def id_values(lines: list[bytes], schema: Schema, column: int) -> list[str]:
    """Column ``column`` of every raw line ('' where the line has fewer columns)."""
    out = []
    for line in lines:
        parts = line.rstrip(b"\r\n").split(schema.delimiter.encode() if schema.delimiter else None)
        out.append(parts[column].decode("utf-8", "replace") if column < len(parts) else "")
    return out


def format_rows(probs: np.ndarray, ids: list[str] | None) -> str:
    """Output lines of one chunk: ``%.9g`` per row (``nan`` for bad rows), prefixed by ``id,`` when ids are given."""
    values = ["nan" if math.isnan(p) else f"{p:.9g}" for p in probs.tolist()]
    if ids is not None:
        values = [f"{i},{v}" for i, v in zip(ids, values, strict=True)]
    return "".join(v + "\n" for v in values)


# -------------------------------------------------------------------------------------------- driver


@dataclass
class PredictOptions:
    fmt: str | None = None
    label: LabelMode = "auto"
    batch_size: int = 8192
    bad_rows: Literal["fail", "skip"] = "fail"
    id_column: str | None = None
    csv_schema: str | None = None
    progress: bool = True


def score_stream(run: Run, model: nn.Module, lines: Iterator[bytes], out: IO[str], name: str,
                 opts: PredictOptions) -> tuple[int, int]:
    """Score raw ``lines`` (header included) into ``out``; returns (rows written, malformed rows)."""
    from tqdm import tqdm

    schema = base_schema(run, opts.fmt, opts.csv_schema)
    head = list(itertools.islice(lines, HEAD_LINES))
    first_line = 1
    if head and (is_header(schema, head[0]) or is_header(without_label(schema), head[0])):
        head, first_line = head[1:], 2
    try:
        schema = input_schema(schema, first_data_line(schema, head), opts.label)
    except PredictError as e:
        raise PredictError(f"{name}: {e}") from None
    encoder = Encoder.for_run(run, schema)
    id_col = column_index(schema, opts.id_column)
    if id_col is not None:
        out.write(f"{opts.id_column},probability\n")
    keys = [f.name for f in run.meta.categorical]
    bad = BadRows(opts.bad_rows, name)
    rows = 0
    with tqdm(desc="predict", unit=" rows", unit_scale=True, disable=not opts.progress, file=sys.stderr) as bar:
        for chunk in read_chunks(itertools.chain(head, lines), opts.batch_size, first_line):
            ok_idx, sparse, dense, rejected = encoder.encode(chunk)
            bad.add(chunk.first_line, rejected)
            probs = np.full(len(chunk.lines), np.nan, dtype=np.float64)
            probs[ok_idx] = predict_proba(model, keys, dense, sparse)
            ids = id_values(chunk.lines, schema, id_col) if id_col is not None else None
            out.write(format_rows(probs, ids))
            rows += len(chunk.lines)
            bar.update(len(chunk.lines))
    bad.report()
    return rows, bad.total


def column_index(schema: Schema, name: str | None) -> int | None:
    """Index of raw column ``name`` in ``schema`` (None when no id column is wanted)."""
    if name is None:
        return None
    names = [c.name for c in schema.columns]
    if name not in names or schema.delimiter is None:
        raise PredictError(f"--id-column {name!r}: not a column of {schema.format} (columns: {', '.join(names)})")
    return names.index(name)


def predict_file(run_dir: str, input_path: str, output_path: str, opts: PredictOptions,
                 checkpoint: str = "best", data_dir: str | None = None) -> tuple[int, int]:
    """Score ``input_path`` (``-`` = stdin) into ``output_path`` (``-`` = stdout); returns (rows, malformed rows)."""
    run = load_run(run_dir, checkpoint, data_dir)
    model = load_model(run)
    src = open_input(input_path)
    name = "<stdin>" if input_path == "-" else input_path
    try:
        if output_path == "-":
            return score_stream(run, model, iter(src), sys.stdout, name, opts)
        tmp = output_path + ".tmp"
        try:
            with open(tmp, "w") as out:
                result = score_stream(run, model, iter(src), out, name, opts)
        except BaseException:
            os.remove(tmp)
            raise
        os.replace(tmp, output_path)  # the output appears only when complete
        return result
    finally:
        if src is not sys.stdin.buffer:
            src.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="training run directory (holds config.yaml and checkpoints/)")
    ap.add_argument("--input", required=True, help="raw input file (.gz ok) or - for stdin")
    ap.add_argument("--output", required=True, help="output file or - for stdout")
    ap.add_argument("--format", choices=FORMATS, default=None, help="raw format (default: the run's dataset format)")
    ap.add_argument("--label", choices=("auto", "yes", "no"), default="auto",
                    help="whether rows carry a label column (auto: from the first line's column count)")
    ap.add_argument("--checkpoint", default="best", help="checkpoint name under <run>/checkpoints, or a path")
    ap.add_argument("--data-dir", default=None, help="preprocessed dataset dir (default: the run's dataset.output_dir)")
    ap.add_argument("--schema", default=None, help="csv schema YAML (default: the run's dataset.schema)")
    ap.add_argument("--batch-size", type=int, default=8192, help="rows per batch (bounds memory)")
    ap.add_argument("--bad-rows", choices=("fail", "skip"), default="fail",
                    help="malformed rows: fail with file:line, or write nan and count them")
    ap.add_argument("--id-column", default=None, help="raw column to pass through (e.g. id for Avazu)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.batch_size < 1:
        print("predict: --batch-size must be >= 1", file=sys.stderr)
        return 2
    opts = PredictOptions(args.format, args.label, args.batch_size, args.bad_rows, args.id_column, args.schema,
                          not args.no_progress)
    try:
        rows, bad = predict_file(args.run, args.input, args.output, opts, args.checkpoint, args.data_dir)
    except (PredictError, BadRowError, FileNotFoundError) as e:
        print(f"predict: {e}", file=sys.stderr)
        return 1
    print(f"[predict] {rows:,} rows scored ({bad:,} malformed) -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
