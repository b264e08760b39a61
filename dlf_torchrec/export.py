"""Export a trained run as one self-contained, unsharded model file for serving.

Usage::

    python -m dlf_torchrec.export --run runs/criteo_dcnv2 --out model.pt2 [--format export|torchscript]

The file holds a module ``(dense float32 [B, num_dense], sparse int64 [B, num_categorical]) -> probabilities
float32 [B]`` (``sparse``: one vocabulary id per categorical field, columns in ``meta.json`` order, ids from
``vocab.json`` with 0 = PAD and vocab_size - 1 = OOV; ``num_dense`` may be 0, then pass a [B, 0] tensor); a dataset
with bag (multi-valued) fields takes three more inputs, ``bag_lengths`` int64 [B, num_bags] (items per sample and
bag field), ``bag_values`` int64 [T] (the ids of bag field 0 for every sample, then field 1's, ...; T = the sum of
``bag_lengths``) and ``bag_weights`` float32 [T] (the item weights, 1 for unweighted fields), plus extra
files ``vocab.json``, ``meta.json``, ``config.yaml`` and ``serving.json`` (the interface: field names, vocab sizes,
numeric transform), so that raw rows can be mapped to ids without the training tree.

Formats on this stack (torch 2.13, torchrec 1.8):

* ``export`` (default, works): ``torch.export.export`` with a dynamic batch dimension; the KeyedJaggedTensor is
  built inside the traced wrapper, so the saved graph holds only aten ops (loading needs neither torchrec nor
  fbgemm). Load with :func:`load_exported` or ``torch.export.load(path).module()``.
* ``torchscript`` (fails, reported with the reasons): ``torch.jit.script`` cannot compile the models (their
  ``forward`` returns the ``ModelOutput`` dataclass, and torchrec's KJT / EmbeddingBagCollection code is not
  scriptable); ``torch.jit.trace`` records the KJT's per-key split sizes as constants, so the trace only runs at
  the batch size it was traced with. The exporter tries both, checks the trace at a second batch size, and raises
  :class:`ExportError` explaining what failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Any

import torch
import yaml
from torch import nn

from dlf_torchrec import cli, io
from dlf_torchrec.data.jagged import batch_kjt
from dlf_torchrec.data.meta import META_FILE, VOCAB_FILE, FeatureSpec
from dlf_torchrec.run import Run, load_model, load_run

EXTRA_FILES = ("vocab.json", "meta.json", "config.yaml", "serving.json")
SERVING_VERSION = 1


class ExportError(RuntimeError):
    """The requested export format does not work for this model; the message says why."""


class ServingModule(nn.Module):
    """Plain-tensor interface: ``(dense [B, D] float32, sparse [B, F] int64[, bag_lengths [B, S] int64, bag_values
    [T] int64, bag_weights [T] float32]) -> probabilities [B] float32``."""

    def __init__(self, model: nn.Module, spec: FeatureSpec) -> None:
        super().__init__()
        self.model = model
        self.spec = spec

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor, bag_lengths: torch.Tensor | None = None,
                bag_values: torch.Tensor | None = None, bag_weights: torch.Tensor | None = None) -> torch.Tensor:
        kjt = batch_kjt(self.spec, sparse, bag_lengths, bag_values, bag_weights)
        return torch.sigmoid(self.model(dense, kjt).logits.float())


def serving_module(run: Run) -> ServingModule:
    """The run's checkpoint as an eval-mode :class:`ServingModule` on CPU."""
    return ServingModule(load_model(run), run.meta.feature_spec).eval()


def example_inputs(run: Run, batch: int) -> tuple[torch.Tensor, ...]:
    """Valid example inputs: dense zeros [B, D] and id 1 in every field (always a valid id: 1 <= vocab_size - 1);
    with bag fields, bags of 2 items (id 1, weight 1) per sample."""
    inputs: tuple[torch.Tensor, ...] = (torch.zeros(batch, len(run.meta.dense), dtype=torch.float32),
                                        torch.ones(batch, len(run.meta.categorical), dtype=torch.int64))
    if run.meta.bags:
        items = 2 * batch * len(run.meta.bags)
        inputs += (torch.full((batch, len(run.meta.bags)), 2, dtype=torch.int64), torch.ones(items, dtype=torch.int64),
                   torch.ones(items, dtype=torch.float32))
    return inputs


def interface(run: Run, fmt: str) -> dict[str, Any]:
    """``serving.json``: what the exported module expects and returns."""
    return {
        "serving_version": SERVING_VERSION,
        "format": fmt,
        "inputs": {
            "dense": {"dtype": "float32", "shape": ["B", len(run.meta.dense)], "fields": list(run.meta.dense)},
            "sparse": {"dtype": "int64", "shape": ["B", len(run.meta.categorical)],
                       "fields": [f.name for f in run.meta.categorical],
                       "vocab_sizes": [f.vocab_size for f in run.meta.categorical],
                       "pad_id": 0, "oov_id": "vocab_size - 1"},
            **({"bags": {"lengths": {"dtype": "int64", "shape": ["B", len(run.meta.bags)]},
                         "values": {"dtype": "int64", "shape": ["T"], "order": "field-major, sample after sample"},
                         "weights": {"dtype": "float32", "shape": ["T"], "unweighted_fields": 1.0},
                         "fields": [b.name for b in run.meta.bags],
                         "tables": [b.table for b in run.meta.bags],
                         "vocab_sizes": [b.vocab_size for b in run.meta.bags],
                         "pooling": [b.pooling for b in run.meta.bags],
                         "weighted": [b.weighted for b in run.meta.bags]}} if run.meta.bags else {}),
        },
        "output": {"dtype": "float32", "shape": ["B"], "meaning": "click probability (sigmoid of the logit)"},
        "raw_format": run.source_format,
        "numeric": run.cfg.dataset.numeric,
        "model": run.cfg.model_name,
    }


def extra_files(run: Run, fmt: str) -> dict[str, str]:
    """The files stored inside the model file, name -> text."""
    vocab = io.read_text(os.path.join(run.data_dir, VOCAB_FILE))
    meta = io.read_text(os.path.join(run.data_dir, META_FILE))
    return {"vocab.json": vocab, "meta.json": meta, "config.yaml": yaml.safe_dump(run.cfg.to_dict(), sort_keys=False),
            "serving.json": json.dumps(interface(run, fmt), indent=2)}


def export_program(module: ServingModule, run: Run) -> torch.export.ExportedProgram:
    """``torch.export`` with a dynamic batch dimension (any B >= 1)."""
    batch = torch.export.Dim("batch", min=1)
    shapes: tuple[dict[int, Any], ...] = ({0: batch}, {0: batch})
    if run.meta.bags:
        items = torch.export.Dim("items", min=0)
        shapes += ({0: batch}, {0: items}, {0: items})
    return torch.export.export(module, example_inputs(run, 4), dynamic_shapes=shapes)


def script_module(module: ServingModule, run: Run) -> torch.jit.ScriptModule:
    """TorchScript: ``torch.jit.script``, else a trace that must also hold at another batch size."""
    reasons = []
    try:
        return torch.jit.script(module)
    except Exception as e:  # the scripting frontend raises many types
        reasons.append(f"torch.jit.script: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    try:
        with warnings.catch_warnings():  # TracerWarnings from torchrec's KJT code: the failure is checked below
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, example_inputs(run, 4), check_trace=False)
        check = example_inputs(run, 7)
        if not torch.allclose(traced(*check), module(*check), atol=1e-6):
            raise ExportError("outputs differ at another batch size")
        return traced
    except Exception as e:
        reasons.append(f"torch.jit.trace: {type(e).__name__}: {str(e).splitlines()[0][:300]} (KJT split sizes "
                       f"are recorded as constants of the traced batch size)")
    raise ExportError("TorchScript export failed; use --format export.\n  " + "\n  ".join(reasons))


def save(module: ServingModule, run: Run, out: str, fmt: str) -> None:
    """Export ``module`` in format ``fmt`` to ``out`` with the extra files inside (``out`` appears only when
    complete)."""
    extras = extra_files(run, fmt)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with torch.no_grad():
        if fmt == "export":
            program: Any = export_program(module, run)
        elif fmt == "torchscript":
            program = script_module(module, run)
        else:
            raise ExportError(f"unknown format {fmt!r} (export | torchscript)")
    with io.atomic_open(out, "wb") as f:
        if fmt == "export":
            torch.export.save(program, f, extra_files=extras)
        else:
            torch.jit.save(program, f, _extra_files=extras)


def load_exported(path: str) -> tuple[Any, dict[str, str]]:
    """(callable ``(dense, sparse) -> probabilities``, extra files) of a file written by :func:`save`."""
    extras = dict.fromkeys(EXTRA_FILES, "")
    try:
        program = torch.export.load(path, extra_files=extras)
        return program.module(), extras
    except Exception:  # not a torch.export archive: TorchScript
        extras = dict.fromkeys(EXTRA_FILES, "")
        return torch.jit.load(path, _extra_files=extras), extras


def export_run(run_dir: str, out: str, fmt: str = "export", checkpoint: str = "best",
               data_dir: str | None = None) -> None:
    """Load run ``run_dir`` (checkpoint ``checkpoint``) and export it to ``out``."""
    run = load_run(run_dir, checkpoint, data_dir)
    save(serving_module(run), run, out, fmt)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = cli.ArgumentParser("export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="training run directory (holds config.yaml and checkpoints/)")
    ap.add_argument("--out", required=True, help="model file to write (e.g. model.pt2)")
    ap.add_argument("--format", choices=("export", "torchscript"), default="export")
    ap.add_argument("--checkpoint", default="best", help="checkpoint name under <run>/checkpoints, or a path")
    ap.add_argument("--data-dir", default=None, help="preprocessed dataset dir (default: the run's dataset.output_dir)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run("export", lambda: _export(args), args.debug, ExportError)


def _export(args: argparse.Namespace) -> int:
    export_run(args.run, args.out, args.format, args.checkpoint, args.data_dir)
    print(f"[export] {args.format} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
