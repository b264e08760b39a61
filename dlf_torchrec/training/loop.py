"""The training loop: TrainPipelineSparseDist steps, evaluation, early stopping, LR-on-plateau, best checkpoint."""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torchrec.datasets.utils import Batch
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from tqdm import tqdm

from dlf_torchrec.config import ExperimentConfig
from dlf_torchrec.data.loader import make_dataloader
from dlf_torchrec.parallel import DistContext
from dlf_torchrec.training import checkpoint as ckpt
from dlf_torchrec.training.metrics import compute_metrics, gather_predictions
from dlf_torchrec.training.task import build_optimizer, scale_learning_rates


class NonFiniteLossError(RuntimeError):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainerState:
    """Everything besides tensors that a resumed run needs."""

    epoch: int = 0
    global_step: int = 0
    best_score: float = -math.inf
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_evals: int = 0
    stopped_early: bool = False


class MetricsLog:
    """JSON-lines log of train/eval events (rank 0 only)."""

    def __init__(self, path: str, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        if enabled:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    def write(self, **record: Any) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


class Trainer:
    """Runs epochs on a sharded model, evaluates, stops early and restores the best checkpoint."""

    def __init__(self, cfg: ExperimentConfig, ctx: DistContext, dmp: DistributedModelParallel, data_dir: str) -> None:
        self.cfg, self.ctx, self.dmp, self.data_dir = cfg, ctx, dmp, data_dir
        tr = cfg.training
        if tr.batch_size % ctx.world_size:
            raise ValueError(f"training.batch_size {tr.batch_size} is not divisible by world size {ctx.world_size}")
        self.batch_per_rank = tr.batch_size // ctx.world_size
        self.optimizer = build_optimizer(dmp, cfg.optimizer.dense, cfg.optimizer.grad_clip_norm)
        self.pipeline = TrainPipelineSparseDist(dmp, self.optimizer, ctx.device)
        self.state = TrainerState()
        self.checkpoint_dir = os.path.join(tr.output_dir, "checkpoints")
        self.log = MetricsLog(os.path.join(tr.output_dir, "metrics.jsonl"), ctx.is_main)

    # ------------------------------------------------------------------ data
    def _loader(self, split: str, for_eval: bool) -> Any:
        tr = self.cfg.training
        return make_dataloader(
            self.data_dir, split, self.batch_per_rank, self.ctx.rank, self.ctx.world_size,
            shuffle=not for_eval, seed=tr.seed, epoch=self.state.epoch, num_workers=tr.num_workers,
            for_eval=for_eval,
        )

    def _progress(self, iterable: Any, desc: str, total: int | None = None) -> Any:
        show = self.cfg.training.progress and self.ctx.is_main
        return tqdm(iterable, desc=desc, total=total, disable=not show, leave=False, dynamic_ncols=True)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        """Exact metrics over the whole split, gathered from every rank."""
        model = self.pipeline.detach()
        model.eval()
        probs, labels = [], []
        loader = self._loader(split, for_eval=True)
        for batch in self._progress(loader, f"eval {split}", total=len(loader)):
            batch = batch.to(self.ctx.device)
            _, (_, logits, batch_labels) = model(batch)
            probs.append(torch.sigmoid(logits.float()))
            labels.append(batch_labels)
        model.train()
        p, y = gather_predictions(torch.cat(probs), torch.cat(labels))
        return compute_metrics(p, y)

    def _score(self, metrics: dict[str, float]) -> float:
        return sum(w * metrics[k] for k, w in self.cfg.training.monitor.items())

    def _after_eval(self, metrics: dict[str, float]) -> None:
        """Early stopping and LR-on-plateau bookkeeping; saves the best checkpoint on improvement."""
        tr, st = self.cfg.training, self.state
        score = self._score(metrics)
        improved = score > st.best_score
        if improved:
            st.best_score, st.best_metrics, st.bad_evals = score, dict(metrics), 0
            self.pipeline.detach()
            ckpt.save_checkpoint(os.path.join(self.checkpoint_dir, "best"), self.dmp, self.optimizer, asdict(st))
        else:
            st.bad_evals += 1
            lrs = scale_learning_rates(self.optimizer, tr.lr_decay_factor, tr.min_lr)
            self.log.write(event="lr_decay", step=st.global_step, lrs=lrs)
            if st.bad_evals >= tr.early_stop_patience:
                st.stopped_early = True
        self.log.write(event="eval", split="valid", epoch=st.epoch, step=st.global_step, score=score,
                       improved=improved, **metrics)
        if self.ctx.is_main:
            mark = "*" if improved else ""
            tqdm.write(f"[epoch {st.epoch} step {st.global_step}] valid auc={metrics['auc']:.4f} "
                       f"logloss={metrics['logloss']:.4f} score={score:.4f}{mark}")

    # ------------------------------------------------------------------ training
    def _train_epoch(self) -> None:
        tr, st = self.cfg.training, self.state
        loader = self._loader("train", for_eval=False)
        iterator: Iterator[Batch] = iter(loader)
        bar = self._progress(range(len(loader)), f"epoch {st.epoch}")
        self.dmp.train()
        t0, rows, loss_sum, loss_n = time.perf_counter(), 0, 0.0, 0
        for _ in bar:
            try:
                loss, _, labels = self.pipeline.progress(iterator)
            except StopIteration:
                break
            st.global_step += 1
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
        elapsed = time.perf_counter() - t0
        self.log.write(event="train_epoch", epoch=st.epoch, step=st.global_step,
                       loss=loss_sum / max(loss_n, 1), samples_per_s_per_rank=rows / max(elapsed, 1e-9))

    def fit(self) -> dict[str, dict[str, float]]:
        """Train until epochs or early stop; restore the best checkpoint; return its valid (and test) metrics."""
        tr, st = self.cfg.training, self.state
        seed_everything(tr.seed)
        while st.epoch < tr.epochs and not st.stopped_early:
            self._train_epoch()
            if not st.stopped_early:
                self._after_eval(self.evaluate("valid"))
            st.epoch += 1
        self.pipeline.detach()
        ckpt.load_checkpoint(os.path.join(self.checkpoint_dir, "best"), self.dmp, self.optimizer)
        results = {"valid": self.evaluate("valid")}
        if tr.evaluate_test and self._has_split("test"):
            results["test"] = self.evaluate("test")
        for split, metrics in results.items():
            self.log.write(event="final", split=split, **metrics)
        return results

    def _has_split(self, split: str) -> bool:
        from dlf_torchrec.data.meta import DatasetMeta

        info = DatasetMeta.load(self.data_dir).splits.get(split)
        return info is not None and info.rows > 0
