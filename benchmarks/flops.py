"""Model cost in FLOPs: forward + backward MFLOP per sample and parameter counts of each quality-suite row's model.

Explains the samples/s columns of the quality tables: a model that is slow on CPU because it does more arithmetic
(compute-bound) and one that is slow per FLOP (many small kernels, memory traffic) need different fixes. Counted by
``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and attention; element-wise ops are not counted)
on the unsharded model (the TorchRec embedding lookups are not counted either: they are gathers, not FLOPs) over a
batch of random ids on the config's dataset feature spec::

    python benchmarks/flops.py                      # the rows of the dlf and tf4ctr quality suites (Frappe), ~1 min
    python benchmarks/flops.py --suite dlf --batch 256
    python benchmarks/flops.py --quick              # one synthetic config (the tests run this)

Outputs in ``--out`` (default ``benchmarks/results``): ``flops.csv`` and ``flops.md``, stamped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
from batches import random_batch  # noqa: E402
from quality_suites import suite_rows  # noqa: E402

from dlf_torchrec import cli  # noqa: E402

COLUMNS = ("label", "config", "overrides", "mflop_per_sample_fwd_bwd", "mflop_per_sample_fwd", "params", "status")


def model_flops(config: str, overrides: list[str], batch: int) -> tuple[float, float, int]:
    """(forward MFLOP / sample, forward + backward MFLOP / sample, parameter count) of one config's model."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dlf_torchrec.config import load_config
    from dlf_torchrec.data.meta import DatasetMeta
    from dlf_torchrec.data.preprocess import ensure_preprocessed
    from dlf_torchrec.training.stack import build_task

    cfg = load_config(os.path.join(common.REPO_ROOT, config), [*overrides, "dataset.progress=false"])
    ensure_preprocessed(cfg.dataset)
    spec = DatasetMeta.load(cfg.dataset.output_dir).feature_spec
    torch.manual_seed(2019)
    model = build_task(cfg, spec).model
    model.train()
    inputs = random_batch(spec, batch, torch.Generator().manual_seed(2019))
    with FlopCounterMode(display=False) as forward_counter:
        logits = model(inputs.dense_features, inputs.sparse_features).logits
    with FlopCounterMode(display=False) as backward_counter:
        logits.float().sum().backward()
    forward = forward_counter.get_total_flops() / batch / 1e6
    total = forward + backward_counter.get_total_flops() / batch / 1e6
    return forward, total, sum(p.numel() for p in model.parameters())


def suite_jobs(suites: list[str]) -> list[tuple[str, str, list[str]]]:
    """(label, config, overrides) of each quality-suite row, first occurrence of a label kept."""
    seen: dict[str, tuple[str, str, list[str]]] = {}
    for suite in suites:
        rows, _ = suite_rows(suite, quick=False)
        for r in rows:
            seen.setdefault(r.label, (r.label, r.config, list(r.overrides)))
    return list(seen.values())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser("benchmarks/flops", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", nargs="+", choices=("dlf", "tf4ctr"), default=["dlf", "tf4ctr"])
    p.add_argument("--batch", type=int, default=256, help="samples in the counted batch (per-sample figures)")
    p.add_argument("--quick", action="store_true", help="one synthetic DLF config on a small generated dataset")
    p.add_argument("--out", default=common.DEFAULT_RESULTS_DIR)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run("benchmarks/flops", lambda: _benchmark(args, argv), args.debug)


def _benchmark(args: argparse.Namespace, argv: list[str] | None) -> int:
    stamp = common.make_stamp([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = ([("DLF authors + NAF (synthetic, quick)", "configs/synthetic/dlf.yaml",
                  ["dataset.synthetic_rows=2000", f"dataset.output_dir={tmp}/data", "model.naf=true"])]
                if args.quick else suite_jobs(args.suite))
        for label, config, overrides in jobs:
            row: dict[str, Any] = {"label": label, "config": config, "overrides": " ".join(overrides)}
            try:
                forward, total, params = model_flops(config, overrides, args.batch)
                row.update(mflop_per_sample_fwd=round(forward, 2), mflop_per_sample_fwd_bwd=round(total, 2),
                           params=params, status="ok")
            except Exception as e:  # noqa: BLE001 - one failing config is reported, the others still run
                row["status"] = f"error: {type(e).__name__}: {e}"[:200]
            print(f"{label}: {row.get('mflop_per_sample_fwd_bwd', '-')} MFLOP/sample fwd+bwd, "
                  f"{row.get('params', '-')} params", flush=True)
            rows.append(row)
    os.makedirs(args.out, exist_ok=True)
    setup = (f"- FLOPs counted by torch.utils.flop_counter.FlopCounterMode (matmul / conv / attention; element-wise "
             f"ops and embedding gathers not counted) on the unsharded model in train mode, batch {args.batch} of "
             "random ids on the config's dataset feature spec; per sample = total / batch\n"
             "- fwd+bwd = forward + backward of sum(logits) (the optimiser step is not counted)")
    cols = ["label", "overrides", "mflop_per_sample_fwd_bwd", "mflop_per_sample_fwd", "params", "status"]
    paths = [common.write_csv(os.path.join(args.out, "flops.csv"), rows, COLUMNS, stamp),
             common.write_markdown(os.path.join(args.out, "flops.md"), "Model cost: MFLOP per sample",
                                   [("Setup", setup), ("Results", common.markdown_table(rows, cols))], stamp)]
    for path in paths:
        print("wrote", path)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
