"""How close a run on synthetic data comes to the optimum: model AUC beside the oracle and a logistic regression.

The synthetic generator draws every label from a known teacher and keeps each row's true click probability
(:mod:`dlf_torchrec.data.synthetic`), so per split:

* **oracle AUC**: the AUC of the true probabilities against the drawn labels (Bayes-optimal: no model ranks the
  split's rows better in expectation);
* **LR AUC**: the ``lr`` model (first-order only, the packaged ``dlf_torchrec/configs/synthetic/lr.yaml``) trained
  by this product on the same shards and ranks. It is trained once per dataset, on the first synthetic run that
  needs it, under ``<dataset.output_dir>/baselines/lr/`` (for an object-store dataset: under its local copy) and
  cached there in ``baseline.json`` with the configuration and dataset it belongs to (a changed ``lr.yaml`` or
  regenerated dataset retrains it; a run of the ``lr`` model reports its own AUC);
* **ratio**: (AUC - 0.5) / (oracle AUC - 0.5), for the model and for LR.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import torch.distributed as dist

from dlf_torchrec import io
from dlf_torchrec.config import PACKAGED_CONFIGS, ExperimentConfig, load_config
from dlf_torchrec.data.meta import DatasetMeta
from dlf_torchrec.data.synthetic import split_probabilities
from dlf_torchrec.parallel import DistContext
from dlf_torchrec.training.metrics import roc_auc

LR_CONFIG = PACKAGED_CONFIGS / "synthetic" / "lr.yaml"
BASELINE_FILE = "baseline.json"

Results = dict[str, dict[str, float]]


def oracle_auc(data_dir: str, split: str) -> float:
    """Bayes-optimal AUC of one split: the true click probabilities ranked against the drawn labels."""
    labels, probs = split_probabilities(data_dir, split)
    return roc_auc(labels, probs)


def lr_config(cfg: ExperimentConfig, data_dir: str) -> ExperimentConfig:
    """The packaged ``lr.yaml`` on the run's dataset, writing under ``<data_dir>/baselines/lr`` (``data_dir``: the
    dataset's local directory, for an object-store dataset its local copy)."""
    lr = load_config(str(LR_CONFIG))
    lr.dataset = cfg.dataset
    tr = lr.training
    tr.output_dir = os.path.join(data_dir, "baselines", "lr")
    tr.progress, tr.device, tr.resume = cfg.training.progress, cfg.training.device, False
    return lr


def lr_baseline(cfg: ExperimentConfig, ctx: DistContext, data_dir: str, results: Results) -> Results:
    """Valid/test metrics of the product's logistic regression on this dataset (cached; trained on first need).

    Called on every rank (training it is a collective job); returns the same results on every rank.
    """
    if cfg.model_name == "lr":
        return results
    lr = lr_config(cfg, data_dir)
    # Concurrent runs on one dataset (a sweep's trials) train it once: the others' rank 0 waits here, then reads
    # the cache. Only rank 0 takes the lock; the other ranks wait in the broadcast below.
    with _exclusive(lr.training.output_dir + ".lock" if ctx.is_main else None):
        return _lr_baseline(lr, ctx, data_dir)


@contextlib.contextmanager
def _exclusive(lock_path: str | None) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_path`` (blocking) for the block; nothing when None."""
    if lock_path is None:
        yield
        return
    with io.exclusive_lock(lock_path):
        yield


def _lr_baseline(lr: ExperimentConfig, ctx: DistContext, data_dir: str) -> Results:
    key = json.loads(json.dumps({"config": lr.to_dict(), "meta": asdict(DatasetMeta.load(data_dir))}))
    path = os.path.join(lr.training.output_dir, BASELINE_FILE)
    cached: list[Any] = [None]
    if ctx.is_main:
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            if saved.get("key") == key:
                cached[0] = saved["results"]
        if cached[0] is None:
            shutil.rmtree(lr.training.output_dir, ignore_errors=True)
    if ctx.world_size > 1:
        dist.broadcast_object_list(cached, src=0)
    if cached[0] is not None:
        return cached[0]
    from dlf_torchrec.training.loop import Trainer, seed_everything
    from dlf_torchrec.training.stack import build_training_stack

    if ctx.is_main:
        print(f"[dlf_torchrec] training the logistic-regression baseline ({LR_CONFIG.name}) once for this dataset")
    seed_everything(lr.training.seed)
    stack = build_training_stack(lr, ctx, DatasetMeta.load(data_dir).feature_spec)
    lr_results = Trainer(lr, ctx, stack, data_dir).fit()
    if ctx.is_main:
        with open(path + ".tmp", "w") as f:
            json.dump({"key": key, "results": lr_results}, f, indent=2)
        os.replace(path + ".tmp", path)
    return lr_results


def synthetic_report(cfg: ExperimentConfig, ctx: DistContext, data_dir: str, results: Results) -> Results:
    """Add ``oracle_auc``, ``lr_auc``, ``ratio`` and ``lr_ratio`` to each split of ``results`` (every rank) and
    print them on rank 0."""
    lr_results = lr_baseline(cfg, ctx, data_dir, results)
    out: Results = {}
    for split, metrics in results.items():
        oracle = oracle_auc(data_dir, split)
        lr_auc = lr_results[split]["auc"]
        out[split] = {**metrics, "oracle_auc": oracle, "lr_auc": lr_auc,
                      "ratio": (metrics["auc"] - 0.5) / (oracle - 0.5), "lr_ratio": (lr_auc - 0.5) / (oracle - 0.5)}
        if ctx.is_main:
            m = out[split]
            print(f"[dlf_torchrec] {split}: model AUC {m['auc']:.4f} | oracle AUC {oracle:.4f} | LR AUC {lr_auc:.4f} "
                  f"| ratio (AUC-0.5)/(oracle-0.5): model {m['ratio']:.4f}, LR {m['lr_ratio']:.4f}")
    return out
