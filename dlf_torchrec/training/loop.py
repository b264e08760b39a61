"""The training loop: TrainPipelineSparseDist steps, evaluation, early stopping, LR-on-plateau, checkpoints, resume."""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torchrec.datasets.utils import Batch
from tqdm import tqdm

from dlf_torchrec import io
from dlf_torchrec.config import ConfigError, ExperimentConfig
from dlf_torchrec.data.loader import CTRDataLoader, make_dataloader, resolve_num_workers
from dlf_torchrec.data.meta import DatasetMeta
from dlf_torchrec.parallel import DistContext
from dlf_torchrec.training import checkpoint as ckpt
from dlf_torchrec.training.metrics import compute_metrics, gather_predictions, json_safe
from dlf_torchrec.training.preemption import Preempted, StopRequest
from dlf_torchrec.training.stack import TrainingStack
from dlf_torchrec.training.task import learning_rates, scale_learning_rates
from dlf_torchrec.training.tracking import METRICS_FILE, RunTracker

# No tqdm monitor thread: DataLoader workers are forked at every epoch and evaluation, and a fork taken while another
# thread holds a lock can leave the child hung (seen once in CI: an evaluation worker stuck right after fork).
tqdm.monitor_interval = 0

# A file of this name in training.output_dir stops the run cleanly at its next check (every STOP_CHECK_STEPS steps
# and after each evaluation): like an early stop, the best checkpoint is restored and results.json written. The sweep
# prunes trials this way (dlf_torchrec/sweep); a person can too: `touch runs/x/STOP`.
STOP_FILE = "STOP"
STOP_CHECK_STEPS = 50


class NonFiniteLossError(RuntimeError):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainerState:
    """Everything besides tensors that a resumed run needs (saved as JSON beside each checkpoint)."""

    epoch: int = 0
    # Batches of `epoch` already trained: a resumed run skips them (the shuffle is seeded by (seed, epoch)).
    batch_in_epoch: int = 0
    global_step: int = 0
    best_score: float = -math.inf
    best_metrics: dict[str, float] = field(default_factory=dict)
    # global_step of the best checkpoint's weights (-1: none yet).
    best_step: int = -1
    bad_evals: int = 0
    stopped_early: bool = False


class MetricsLog:
    """JSON-lines log of train/eval/checkpoint events (rank 0 only), mirrored to TensorBoard event files in the same
    directory (:mod:`~dlf_torchrec.training.tracking`); :meth:`close` also draws ``curves.png``."""

    def __init__(self, path: str, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        if enabled:
            io.makedirs(os.path.dirname(path) or ".")
        self.tracker = RunTracker(os.path.dirname(path) or ".", enabled)

    def write(self, **record: Any) -> None:
        if self.enabled:
            record = json_safe({"time": round(time.time(), 3), **record})
            io.append_text(self.path, json.dumps(record, allow_nan=False) + "\n")
            self.tracker.record(record)

    def close(self) -> None:
        self.tracker.close()


class Trainer:
    """Runs epochs on a sharded model, evaluates, stops early, checkpoints, and restores the best checkpoint."""

    def __init__(self, cfg: ExperimentConfig, ctx: DistContext, stack: TrainingStack, data_dir: str) -> None:
        self.cfg, self.ctx, self.data_dir = cfg, ctx, data_dir
        self.dmp, self.optimizer, self.pipeline = stack.dmp, stack.optimizer, stack.pipeline
        tr = cfg.training
        if tr.batch_size % ctx.world_size:
            raise ValueError(f"training.batch_size {tr.batch_size} is not divisible by world size {ctx.world_size}")
        self.batch_per_rank = tr.batch_size // ctx.world_size
        self.meta = DatasetMeta.load(data_dir)
        fields = [f.name for f in self.meta.categorical]
        if tr.group_auc_field is not None and tr.group_auc_field not in fields:
            raise ConfigError(f"training.group_auc_field: {tr.group_auc_field!r} is not a categorical field of the "
                              f"dataset (fields: {', '.join(fields)})")
        self.state = TrainerState()
        self._resumed = False
        self.checkpoint_dir = os.path.join(tr.output_dir, "checkpoints")
        self.log = MetricsLog(os.path.join(tr.output_dir, METRICS_FILE), ctx.is_main)
        self.stop = StopRequest(ctx.device)  # SIGTERM (preemption): checkpoint after the current step, then stop

    # ------------------------------------------------------------------ data
    def _loader(self, split: str, for_eval: bool, skip_batches: int = 0) -> CTRDataLoader:
        tr = self.cfg.training
        return make_dataloader(
            self.data_dir, split, self.batch_per_rank, self.ctx.rank, self.ctx.world_size,
            shuffle=not for_eval, seed=tr.seed, epoch=self.state.epoch,
            num_workers=resolve_num_workers(tr.num_workers, self.ctx.local_world_size),
            for_eval=for_eval, skip_batches=skip_batches,
        )

    def _progress(self, iterable: Any, desc: str, total: int | None = None, initial: int = 0) -> Any:
        show = self.cfg.training.progress and self.ctx.is_main
        return tqdm(iterable, desc=desc, total=total, initial=initial, disable=not show, leave=False,
                    dynamic_ncols=True)

    # ------------------------------------------------------------------ checkpoints
    def _save_periodic(self) -> str:
        st = self.state
        path = os.path.join(self.checkpoint_dir, f"step_{st.global_step:08d}")
        ckpt.save_checkpoint(path, self.dmp, self.optimizer, asdict(st))
        ckpt.prune_checkpoints(self.checkpoint_dir, self.cfg.training.keep_checkpoints)
        self.log.write(event="checkpoint", path=path, epoch=st.epoch, step=st.global_step)
        return path

    def resume(self) -> None:
        """Continue from the newest complete periodic checkpoint (if ``training.resume``); once per Trainer."""
        latest = ckpt.periodic_checkpoints(self.checkpoint_dir)
        if self._resumed or not self.cfg.training.resume or not latest:
            return
        self._resumed = True
        saved = ckpt.load_checkpoint(latest[-1], self.dmp, self.optimizer)
        self.state = TrainerState(**saved)
        self.log.write(event="resume", path=latest[-1], epoch=self.state.epoch, step=self.state.global_step)
        if self.ctx.is_main:
            tqdm.write(f"[dlf_torchrec] resumed from {latest[-1]} (epoch {self.state.epoch}, "
                       f"step {self.state.global_step})")

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        """Exact metrics over the whole split, gathered from every rank."""
        model = self.pipeline.detach()
        ckpt.average_norm_statistics(model)  # every rank evaluates the same model
        model.eval()
        probs, labels, groups = [], [], []
        group_field = self.cfg.training.group_auc_field
        loader = self._loader(split, for_eval=True)
        for batch in self._progress(loader, f"eval {split}", total=len(loader)):
            batch = batch.to(self.ctx.device)
            if group_field is not None:  # the field's ids (one per row) identify the groups
                groups.append(batch.sparse_features[group_field].values())
            _, (_, logits, batch_labels) = model(batch)
            probs.append(torch.sigmoid(logits.float()))
            labels.append(batch_labels)
        model.train()
        p, y, g = gather_predictions(torch.cat(probs), torch.cat(labels), torch.cat(groups) if groups else None)
        return compute_metrics(p, y, g)

    def _score(self, metrics: dict[str, float]) -> float:
        return sum(w * metrics[k] for k, w in self.cfg.training.monitor.items())

    def _after_eval(self, metrics: dict[str, float]) -> None:
        """Early stopping and LR-on-plateau bookkeeping; saves the best checkpoint on improvement."""
        tr, st = self.cfg.training, self.state
        score = self._score(metrics)
        improved = score > st.best_score
        if improved:
            st.best_score, st.best_metrics, st.best_step, st.bad_evals = score, dict(metrics), st.global_step, 0
            ckpt.save_checkpoint(os.path.join(self.checkpoint_dir, "best"), self.dmp, self.optimizer, asdict(st))
        else:
            st.bad_evals += 1
            lrs = scale_learning_rates(self.optimizer, tr.lr_decay_factor, tr.min_lr)
            self.log.write(event="lr_decay", step=st.global_step, lrs=lrs, lr=learning_rates(self.optimizer))
            if st.bad_evals >= tr.early_stop_patience:
                st.stopped_early = True
        self._check_stop()
        self.log.write(event="eval", split="valid", epoch=st.epoch, step=st.global_step, score=score,
                       improved=improved, **metrics)
        if self.ctx.is_main:
            mark = " *" if improved else ""
            gauc = f" gauc={metrics['gauc']:.4f}" if "gauc" in metrics else ""
            tqdm.write(f"[epoch {st.epoch} step {st.global_step}] valid auc={metrics['auc']:.4f}{gauc} "
                       f"logloss={metrics['logloss']:.4f} score={score:.4f}{mark}")

    # ------------------------------------------------------------------ training
    def _train_epoch(self) -> None:
        st = self.state
        loader = self._loader("train", for_eval=False, skip_batches=st.batch_in_epoch)
        iterator: Generator[Batch, None, None] = iter(loader)
        try:
            self._train_steps(loader, iterator)
        finally:
            # Closing the generator drops its DataLoader iterator, which shuts the workers down now, also when the
            # loop stops early or raises. Left to interpreter exit, the workers (SIGTERM blocked while a stop is
            # handled: training.preemption) ignore multiprocessing's terminate() and the exit joins them forever.
            iterator.close()

    def _train_steps(self, loader: CTRDataLoader, iterator: Iterator[Batch]) -> None:
        tr, st = self.cfg.training, self.state
        total = st.batch_in_epoch + len(loader)
        bar = self._progress(range(len(loader)), f"epoch {st.epoch}", total=total, initial=st.batch_in_epoch)
        self.dmp.train()
        t0, rows, loss_sum, loss_n = time.perf_counter(), 0, 0.0, 0
        for _ in bar:
            try:
                loss, _, labels = self.pipeline.progress(iterator)
            except StopIteration:
                break
            st.global_step += 1
            st.batch_in_epoch += 1
            value = float(loss)
            if not math.isfinite(value):
                raise NonFiniteLossError(f"non-finite loss {value} at step {st.global_step} (epoch {st.epoch}); "
                                         f"the last good checkpoint is under {self.checkpoint_dir}")
            rows += labels.numel()
            loss_sum, loss_n = loss_sum + value, loss_n + 1
            bar.set_postfix(loss=f"{value:.4f}")
            if tr.eval_every_steps and st.global_step % tr.eval_every_steps == 0:
                self._after_eval(self.evaluate("valid"))
                self.pipeline.attach(self.dmp)
                if st.stopped_early:
                    break
            elif st.global_step % STOP_CHECK_STEPS == 0 and self._check_stop():
                break
            saved = None
            if tr.checkpoint_every_steps and st.global_step % tr.checkpoint_every_steps == 0:
                saved = self._save_periodic()
            if self.stop.agreed():  # every rank stops after this same step
                path = saved or self._save_periodic()
                self.log.write(event="preempted", signal=self.stop.signum, epoch=st.epoch, step=st.global_step)
                raise Preempted(self.stop.signum or 0, st.global_step, path)
        elapsed = time.perf_counter() - t0
        self.log.write(event="train_epoch", epoch=st.epoch, step=st.global_step, loss=loss_sum / max(loss_n, 1),
                       samples_per_s=rows * self.ctx.world_size / max(elapsed, 1e-9), lr=learning_rates(self.optimizer))

    def _check_stop(self) -> bool:
        """Whether a stop was requested (:data:`STOP_FILE`; rank 0 looks, every rank gets its answer); if so the run
        ends like an early stop, and the file is removed."""
        path = os.path.join(self.cfg.training.output_dir, STOP_FILE)
        flag = [self.ctx.is_main and io.exists(path)]
        if self.ctx.world_size > 1:
            torch.distributed.broadcast_object_list(flag, src=0)
        if flag[0] and not self.state.stopped_early:
            self.state.stopped_early = True
            self.log.write(event="stop", reason=f"{STOP_FILE} file", epoch=self.state.epoch,
                           step=self.state.global_step)
            if self.ctx.is_main:
                tqdm.write(f"[dlf_torchrec] stop requested ({path}): finishing like an early stop")
                io.remove(path)
        return bool(flag[0])

    @property
    def finished(self) -> bool:
        """Every epoch trained or stopped early: :meth:`fit` would train no step."""
        return self.state.epoch >= self.cfg.training.epochs or self.state.stopped_early

    def fit(self) -> dict[str, dict[str, float]]:
        """Train until epochs or early stop; restore the best checkpoint; return its valid (and test) metrics."""
        with self.stop:
            try:
                return self._fit()
            finally:
                self.log.close()

    def _fit(self) -> dict[str, dict[str, float]]:
        tr = self.cfg.training
        self.resume()
        st = self.state
        while st.epoch < tr.epochs and not st.stopped_early:
            if st.batch_in_epoch == 0:  # mid-epoch resumes continue the RNG streams restored from the checkpoint
                seed_everything(tr.seed + 1000 * st.epoch + self.ctx.rank)
            self._train_epoch()
            if not st.stopped_early:
                self._after_eval(self.evaluate("valid"))
            st.epoch, st.batch_in_epoch = st.epoch + 1, 0
            self._save_periodic()
        self.pipeline.detach()
        if st.best_step == st.global_step:
            # The weights in memory are the best checkpoint's (no step since it was saved): its recorded valid
            # metrics stand, without re-reading it and a second validation pass.
            results = {"valid": dict(st.best_metrics)}
        else:
            ckpt.load_checkpoint(os.path.join(self.checkpoint_dir, "best"), self.dmp)
            results = {"valid": self.evaluate("valid")}
        test = self.meta.splits.get("test")
        if tr.evaluate_test and test is not None and test.rows > 0:
            results["test"] = self.evaluate("test")
        for split, metrics in results.items():
            self.log.write(event="final", split=split, **metrics)
        return results
