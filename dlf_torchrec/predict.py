"""Score a raw Criteo / Avazu / libFM / CSV file with a trained run: one probability per input row, in input order.

Usage::

    python -m dlf_torchrec.predict --run runs/criteo_dcnv2 --input test.txt --output preds.txt
    zcat test.txt.gz | python -m dlf_torchrec.predict --run runs/criteo_dcnv2 --input - --output - > preds.txt

The run directory supplies ``config.yaml`` (written by the trainer), the dataset's ``meta.json`` + ``vocab.json``
(``dataset.output_dir`` of that config, or ``--data-dir``) and the checkpoint (``checkpoints/<name>``, default
``best``); :mod:`dlf_torchrec.run` loads them. Raw rows go through the same parser and the same token -> id
transforms (:class:`dlf_torchrec.data.features.Encoder`) as preprocessing, then through the unsharded model on CPU
in one process (no process group).

Labels: ``--label auto`` (default) looks at the first data line (the first of the first 100 lines with a plausible
column count): the schema's column count means labelled (the label is parsed and ignored), one column fewer means
unlabelled (e.g. Criteo's ``test.txt``, 39 columns; Avazu's ``test`` without ``click``); see
:mod:`dlf_torchrec.data.rawinput`. ``--label yes|no`` forces it.

Output: one probability per input data row (a header line is not a row), ``%.9g`` (float32 round-trips), in input
order; with ``--id-column NAME`` each line is ``<id>,<probability>`` under a header ``<NAME>,probability`` (e.g.
Avazu's ``id``). Malformed rows: ``--bad-rows fail`` (default) stops with ``file:line: reason``;
``--bad-rows skip`` writes ``nan`` for that row and reports the count on stderr. Rows in = rows out, always.
Memory is bounded by ``--batch-size`` rows; progress (tqdm) goes to stderr.

Unknown tokens: at the end a line ``predict: out-of-vocabulary values (...): 3.1% of values overall (valid split:
2.9%); furthest above the valid split: C3 41.2% (valid 12.0%), ...`` gives the share of values that map to their
field's OOV id (unseen in training, rare, or missing: the ids do not tell them apart) next to the same share on the
run's validation split, fields ordered by how far they exceed it. A field whose OOV share exceeds the validation
split's by more than ``--oov-warn FRACTION`` (default 0.5) of what is left, ``(rate - valid) / (1 - valid)``, is
named in a ``predict: warning:`` line: its rows score with the OOV embedding, and the input may not match the
training data (see :mod:`dlf_torchrec.oov`).
``--oov-report PATH`` writes the per-field counts and rates as JSON.
"""


from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass
from typing import IO, Literal

import numpy as np
import torch
from torch import nn

from dlf_torchrec import cli, io
from dlf_torchrec.data.features import Encoder, output_fields
from dlf_torchrec.data.formats import file_formats
from dlf_torchrec.data.meta import FeatureSpec
from dlf_torchrec.data.rawinput import (
    LabelMode,
    RawInputError,
    column_index,
    first_data_line,
    id_values,
    input_schema,
    skip_header,
)
from dlf_torchrec.data.reading import Rejections, line_blocks, open_input, report_rejections
from dlf_torchrec.data.schema import Schema
from dlf_torchrec.data.shards import Bags
from dlf_torchrec.data.sidetables import dataset_schema
from dlf_torchrec.oov import OovCounter
from dlf_torchrec.run import Run, load_model, load_run, to_kjt

# Lines looked at to decide --label auto (the first with a labelled or unlabelled column count decides).
HEAD_LINES = 100


class PredictError(RuntimeError):
    """The input's format does not match the run's dataset (not a malformed row)."""


def base_schema(run: Run, fmt: str | None = None, csv_schema: str | None = None) -> Schema:
    """The labelled raw schema of the run's dataset (``fmt``/``csv_schema`` override the config's)."""
    fmt = fmt or run.source_format
    # The one schema builder preprocessing uses too: the run's side tables are joined the same way.
    schema = dataset_schema(run.cfg.dataset, spec=csv_schema, fmt=fmt, num_fields=len(run.meta.categorical))
    produced = output_fields(schema, run.cfg.dataset.numeric)[0] + [c.name for c in schema.bag_columns]
    expected = run.keys + [b.name for b in run.meta.bags]
    if produced != expected:
        raise PredictError(f"format {fmt!r} yields fields {produced[:5]}... but the model was trained on "
                           f"{expected[:5]}... ({len(expected)} fields)")
    return schema


@torch.inference_mode()
def predict_proba(model: nn.Module, keys: list[str] | FeatureSpec, dense: np.ndarray, sparse: np.ndarray,
                  bags: list[Bags] | None = None) -> np.ndarray:
    """Probabilities float32 [B] of the unsharded model (sigmoid of the fp32 logits, as the trainer computes them).
    ``keys``: the categorical field names, or the feature spec (needed with ``bags``, one per bag field)."""
    if len(sparse) == 0:
        return np.zeros(0, dtype=np.float32)
    out = model(torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)),
                to_kjt(torch.from_numpy(np.ascontiguousarray(sparse, dtype=np.int64)), keys, bags))
    return torch.sigmoid(out.logits.float()).numpy()


def format_rows(probs: np.ndarray, ids: list[str] | None) -> str:
    """Output lines of one chunk: ``%.9g`` per row (``nan`` for bad rows), prefixed by ``id,`` when ids are given."""
    if len(probs) == 0:
        return ""
    if ids is None:
        return "\n".join(map("{:.9g}".format, probs.tolist())) + "\n"  # NaN formats as "nan"
    return "".join(f"{i},{p:.9g}\n" for i, p in zip(ids, probs.tolist(), strict=True))


@dataclass
class PredictOptions:
    fmt: str | None = None
    label: LabelMode = "auto"
    batch_size: int = 8192
    bad_rows: Literal["fail", "skip"] = "fail"
    id_column: str | None = None
    csv_schema: str | None = None
    progress: bool = True
    oov_warn: float = 0.5
    oov_report: str | None = None


def score_stream(run: Run, model: nn.Module, src: IO[bytes], out: IO[str], name: str,
                 opts: PredictOptions) -> tuple[int, int, float]:
    """Score the raw lines of stream ``src`` (header included) into ``out``; returns (rows written, malformed rows,
    seconds spent).

    The stream is read in blocks of ``opts.batch_size`` lines, each parsed and featurised as one buffer by the
    preprocessor's vectorised code (:meth:`Encoder.encode_buffer`) and scored by one forward pass.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    schema = base_schema(run, opts.fmt, opts.csv_schema)
    raw_head = list(itertools.islice(iter(src.readline, b""), HEAD_LINES))
    head, first_line = skip_header(schema, raw_head)
    header = raw_head[0] if first_line == 2 else None
    try:
        schema = input_schema(schema, first_data_line(schema, head), opts.label, header)
    except RawInputError as e:
        raise PredictError(f"{name}: {e}") from None
    encoder = Encoder.for_dataset(schema, run.cfg.dataset.numeric, run.meta, run.vocab)
    id_col = column_index(schema, opts.id_column)
    if id_col is not None:
        out.write(f"{opts.id_column},probability\n")
    bad = Rejections(opts.bad_rows)
    oov = OovCounter.for_run(run)
    rows = 0
    with tqdm(desc="predict", unit=" rows", unit_scale=True, disable=not opts.progress, file=sys.stderr) as bar:
        for buf in line_blocks(src, opts.batch_size, b"".join(head)):
            batch = encoder.encode_buffer(buf)
            bad.add(name, first_line + rows, batch.rejected)
            oov.add(batch.sparse, batch.bags)
            probs = np.full(batch.n_lines, np.nan, dtype=np.float64)
            probs[batch.ok_idx] = predict_proba(model, run.meta.feature_spec, batch.dense, batch.sparse, batch.bags)
            ids = id_values(buf.removesuffix(b"\n").split(b"\n"), schema, id_col) if id_col is not None else None
            out.write(format_rows(probs, ids))
            rows += batch.n_lines
            bar.update(batch.n_lines)
    if bad.total:
        print(f"[predict] {bad.total:,} malformed row(s) scored as nan", file=sys.stderr)
        report_rejections("[predict]", bad.by_reason, bad.examples)
    for join, n in zip(schema.joins, encoder.unmatched, strict=False):
        print(f"[predict] side table {join.file}: {n:,} row(s) without a match for key {join.key} (empty values)",
              file=sys.stderr)
    oov.finish(opts.oov_warn, opts.oov_report)
    return rows, bad.total, time.perf_counter() - t0


def predict_file(run_dir: str, input_path: str, output_path: str, opts: PredictOptions,
                 checkpoint: str = "best", data_dir: str | None = None) -> tuple[int, int, float]:
    """Score ``input_path`` (``-`` = stdin) into ``output_path`` (``-`` = stdout); returns (rows, malformed rows,
    seconds spent scoring: reading, parsing, the model, writing; not loading the run)."""
    run = load_run(run_dir, checkpoint, data_dir)
    model = load_model(run)
    src = open_input(input_path)
    name = "<stdin>" if input_path == "-" else input_path
    try:
        if output_path == "-":
            return score_stream(run, model, src, sys.stdout, name, opts)
        with io.atomic_open(output_path, "w") as out:  # the output appears only when complete
            return score_stream(run, model, src, out, name, opts)
    finally:
        if src is not sys.stdin.buffer:
            src.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = cli.ArgumentParser("predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="training run directory (holds config.yaml and checkpoints/)")
    ap.add_argument("--input", required=True, help="raw input file (.gz ok) or - for stdin")
    ap.add_argument("--output", required=True, help="output file or - for stdout")
    ap.add_argument("--format", choices=file_formats(), default=None,
                    help="raw format (default: the run's dataset format)")
    ap.add_argument("--label", choices=("auto", "yes", "no"), default="auto",
                    help="whether rows carry a label column (auto: from the first line's column count)")
    ap.add_argument("--checkpoint", default="best", help="checkpoint name under <run>/checkpoints, or a path")
    ap.add_argument("--data-dir", default=None, help="preprocessed dataset dir (default: the run's dataset.output_dir)")
    ap.add_argument("--schema", default=None, help="csv schema YAML (default: the run's dataset.schema)")
    ap.add_argument("--batch-size", type=int, default=8192, help="rows per batch (bounds memory)")
    ap.add_argument("--bad-rows", choices=("fail", "skip"), default="fail",
                    help="malformed rows: fail with file:line, or write nan and count them")
    ap.add_argument("--id-column", default=None, help="raw column to pass through (e.g. id for Avazu)")
    ap.add_argument("--oov-warn", type=float, default=0.5, metavar="FRACTION",
                    help="warn about fields whose out-of-vocabulary share exceeds the validation split's by more "
                         "than FRACTION of the rest (default 0.5)")
    ap.add_argument("--oov-report", default=None, metavar="PATH", help="write per-field OOV rates as JSON")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run("predict", lambda: _predict(args), args.debug, PredictError)


def _predict(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise cli.UsageError("--batch-size must be >= 1")
    if not 0 <= args.oov_warn <= 1:
        raise cli.UsageError("--oov-warn must be a fraction in [0, 1]")
    opts = PredictOptions(args.format, args.label, args.batch_size, args.bad_rows, args.id_column, args.schema,
                          not args.no_progress, args.oov_warn, args.oov_report)
    rows, bad, seconds = predict_file(args.run, args.input, args.output, opts, args.checkpoint, args.data_dir)
    print(f"[predict] {rows:,} rows scored ({bad:,} malformed) in {seconds:.1f} s ({rows / max(seconds, 1e-9):,.0f} "
          f"rows/s) -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
