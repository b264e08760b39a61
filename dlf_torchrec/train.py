"""Train a CTR model with sharded embeddings.

Runs unchanged as a single process, under torchrun, and under TorchX::

    python -m dlf_torchrec.train --config configs/frappe/dcnv2.yaml training.epochs=3
    torchrun --nproc_per_node 2 -m dlf_torchrec.train --config configs/synthetic/dcnv2.yaml
    torchx run -s local_cwd dist.ddp -j 1x2 --script dlf_torchrec/train.py -- --config configs/synthetic/dcnv2.yaml

Without ``--config`` it trains the synthetic default (``dlf_torchrec/configs/synthetic/dcnv2.yaml``), generating and
preprocessing its data on first use. Trailing ``key.sub=value`` arguments override config keys.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file (torchx --script): import the installed package, not sibling folders of this file.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

import torch.distributed as dist  # noqa: E402

from dlf_torchrec import cli, io  # noqa: E402
from dlf_torchrec.config import ConfigError, ExperimentConfig, load_config  # noqa: E402
from dlf_torchrec.data.meta import DatasetMeta  # noqa: E402
from dlf_torchrec.data.preprocess import (  # noqa: E402
    DataError,
    check_validation_split,
    ensure_preprocessed,
    local_copy,
)
from dlf_torchrec.data.reading import BadRowError  # noqa: E402
from dlf_torchrec.parallel import (  # noqa: E402
    DistContext,
    describe_plan,
    init_distributed,
    plan_to_dict,
    shutdown_distributed,
)
from dlf_torchrec.training.allocator import configure_cpu_allocator  # noqa: E402
from dlf_torchrec.training.checkpoint import periodic_checkpoints  # noqa: E402
from dlf_torchrec.training.loop import Trainer, seed_everything  # noqa: E402
from dlf_torchrec.training.metrics import json_safe  # noqa: E402
from dlf_torchrec.training.oracle import synthetic_report  # noqa: E402
from dlf_torchrec.training.preemption import EXIT_PREEMPTED, Preempted  # noqa: E402
from dlf_torchrec.training.runfingerprint import ResumeMismatch, check_or_record  # noqa: E402
from dlf_torchrec.training.runlock import RunDirLocked, RunLock  # noqa: E402
from dlf_torchrec.training.stack import build_training_stack  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser("train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="experiment YAML (default: the packaged synthetic DCNv2)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. training.epochs=3 model.dropout=0.1")
    return parser.parse_args(argv)


# Errors of rank 0 that the other ranks raise as the same type (any other type becomes a RuntimeError naming it).
PASSED_ON = {e.__name__: e for e in (ConfigError, ResumeMismatch, DataError, BadRowError, RunDirLocked,
                                     FileNotFoundError)}


def _on_rank0(ctx: DistContext, what: str, action: Callable[[], object]) -> None:
    """Run ``action`` on rank 0 only; its error is raised on every rank, so that all of them stop instead of the
    others waiting in a collective: rank 0 raises it as it is, the others a copy (type and message, see
    :data:`PASSED_ON`)."""
    error: list[tuple[str, str] | None] = [None]
    caught: Exception | None = None
    if ctx.is_main:
        try:
            action()
        except Exception as e:
            caught, error[0] = e, (type(e).__name__, str(e))
    if ctx.world_size > 1:
        dist.broadcast_object_list(error, src=0)
    if caught is not None:
        raise caught
    if error[0] is not None:
        name, message = error[0]
        kind = PASSED_ON.get(name)
        raise kind(message) if kind else RuntimeError(f"{what} failed on rank 0: {name}: {message}")


def prepare_data(cfg: ExperimentConfig, ctx: DistContext) -> str:
    """Rank 0 preprocesses the dataset if needed; the others wait for it. Returns the local directory every rank
    memory-maps (an object-store dataset's local copy, :func:`~dlf_torchrec.data.preprocess.local_copy`)."""
    def prepare() -> None:
        check_validation_split(DatasetMeta.load(ensure_preprocessed(cfg.dataset)), cfg.dataset)

    _on_rank0(ctx, "data preparation", prepare)
    return local_copy(cfg.dataset)


@contextlib.contextmanager
def output_dir_lock(output_dir: str, ctx: DistContext) -> Iterator[None]:
    """Rank 0 holds ``output_dir``'s run lock for the block; every rank raises RunDirLocked if another run has it."""
    lock = RunLock(output_dir)

    def acquire() -> None:
        io.makedirs(output_dir)  # an object store's missing bucket fails here, in one line naming the path
        lock.acquire()

    _on_rank0(ctx, "taking the run lock", acquire)
    try:
        yield
    finally:
        lock.release()  # a no-op on the ranks that did not take it


def _fmt(value: float | None) -> str:
    return "undefined" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _read_results(path: str) -> dict[str, dict[str, float]] | None:
    """A previous run's results.json, or None when there is none (or it is unreadable)."""
    try:
        results = io.read_json(path)
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) and "valid" in results else None


def run(cfg: ExperimentConfig) -> dict[str, dict[str, float]]:
    configure_cpu_allocator(cfg.training.cpu_allocator)
    ctx = init_distributed(cfg.training.device)
    with output_dir_lock(cfg.training.output_dir, ctx):
        return _run_locked(cfg, ctx)


def _run_locked(cfg: ExperimentConfig, ctx: DistContext) -> dict[str, dict[str, float]]:
    seed_everything(cfg.training.seed)
    data_dir = prepare_data(cfg, ctx)
    meta = DatasetMeta.load(data_dir)
    tr = cfg.training
    resuming = tr.resume and bool(periodic_checkpoints(os.path.join(tr.output_dir, "checkpoints")))
    _on_rank0(ctx, "checking the run fingerprint", lambda: check_or_record(cfg, meta, resuming))
    stack = build_training_stack(cfg, ctx, meta.feature_spec)
    if ctx.is_main:
        io.makedirs(tr.output_dir)
        io.write_yaml(os.path.join(tr.output_dir, "config.yaml"), cfg.to_dict())
        print(f"[dlf_torchrec] {cfg.model_name} on {meta.name}: {meta.feature_spec.num_fields} fields, "
              f"{sum(f.vocab_size for f in meta.categorical):,} embedding rows, world size {ctx.world_size} "
              f"({ctx.backend}), rows train/valid/test = "
              + "/".join(str(meta.splits[s].rows) if s in meta.splits else "-" for s in ("train", "valid", "test")))
        plan_path = os.path.join(tr.output_dir, "plan.json")
        io.write_json(plan_path, {"world_size": ctx.world_size, "sharding": cfg.sharding.type,
                                  "tables": plan_to_dict(stack.dmp.plan)}, indent=1)
        print(f"[dlf_torchrec] sharding plan ({plan_path}): {describe_plan(stack.dmp)}")
    trainer = Trainer(cfg, ctx, stack, data_dir)
    trainer.resume()
    results_path = os.path.join(tr.output_dir, "results.json")
    kept = [_read_results(results_path) if ctx.is_main and trainer.finished else None]
    if ctx.world_size > 1:
        dist.broadcast_object_list(kept, src=0)
    if kept[0] is not None:
        # A finished run resumed: nothing to train, and its results stand (re-evaluating under another world size
        # or plan must not replace them).
        results = kept[0]
        if ctx.is_main:
            print(f"[dlf_torchrec] nothing to train: {tr.output_dir} finished at epoch {trainer.state.epoch} "
                  f"(step {trainer.state.global_step}); kept its results.json (raise training.epochs to train on, "
                  f"or use a new training.output_dir)")
    else:
        results = trainer.fit()
        if cfg.dataset.format == "synthetic":  # model AUC beside the oracle's and a logistic regression's
            results = synthetic_report(cfg, ctx, data_dir, results)
    if ctx.is_main:
        if kept[0] is None:
            io.write_text(results_path, json.dumps(json_safe(results), indent=2, allow_nan=False))  # NaN -> null
        for split, m in results.items():
            gauc = f" gAUC={_fmt(m['gauc'])}" if "gauc" in m else ""
            print(f"[dlf_torchrec] best checkpoint {split}: AUC={_fmt(m['auc'])}{gauc} logloss={_fmt(m['logloss'])} "
                  f"rows={int(m['rows'])}")
    return results


def main(argv: list[str] | None = None) -> int:
    """Errors are one line on every rank (:mod:`dlf_torchrec.cli`): exit status 2 for a config error (also one
    found once the data is known, e.g. table sizes against the embedding optimiser), 1 for data and run errors,
    143 when SIGTERM stopped training after a checkpoint (:mod:`dlf_torchrec.training.preemption`)."""
    warnings.filterwarnings("ignore", message=".*is_fx_tracing.*")
    args = parse_args(argv)
    return cli.run("train", lambda: _train(args), args.debug)


def _train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    status = 0
    try:
        run(cfg)
    except Preempted as e:  # SIGTERM: a checkpoint is written; a non-zero exit lets the scheduler requeue the job
        if not dist.is_initialized() or dist.get_rank() == 0:
            print(f"[dlf_torchrec] {e}", file=sys.stderr, flush=True)
        status = EXIT_PREEMPTED
    except BaseException:
        shutdown_distributed()
        raise
    if "TORCHELASTIC_RUN_ID" in os.environ:
        # Under torchrun, a restarted worker occasionally aborts while tearing down the shared rendezvous store's
        # client threads ("terminate called without an active exception", ~1 in 5 kill-test runs), which the agent
        # reads as a failure and restarts a finished job. Results are written and every collective has completed,
        # so leave without running C++ teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    shutdown_distributed()
    return status


if __name__ == "__main__":
    sys.exit(main())
