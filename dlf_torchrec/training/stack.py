"""The training stack, built in one place for the trainer and every benchmark:

model (registry) -> TrainTask -> DistributedModelParallel (planner, fused tables) -> optimisers -> pipeline.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from dlf_torchrec.config import ConfigError, ExperimentConfig
from dlf_torchrec.data.meta import FeatureSpec
from dlf_torchrec.models.registry import build_model
from dlf_torchrec.parallel import DistContext, dense_kernel_tables, shard_model, table_rows
from dlf_torchrec.training.task import TrainTask, build_optimizer


@dataclass
class TrainingStack:
    """A sharded model with its optimisers and TorchRec pipeline (``pipeline.progress`` = one training step)."""

    dmp: DistributedModelParallel
    optimizer: Any
    pipeline: TrainPipelineSparseDist


def build_task(cfg: ExperimentConfig, spec: FeatureSpec, device: torch.device | None = None) -> TrainTask:
    """The unsharded model of ``cfg`` wrapped for the pipeline; ``device=meta`` leaves the tables to DMP."""
    model = build_model(cfg.model_name, spec, cfg.features.embedding_dim, cfg.features.init_std, cfg.model, device)
    opt = cfg.optimizer
    if opt.embedding_regularizer_mode == "batch":
        model.batch_l2 = opt.embedding_regularizer
    elif opt.embedding_regularizer > 0:
        fused = sorted(set(table_rows(model)) - dense_kernel_tables(model, opt.sparse, cfg.sharding))
        if fused:
            raise ConfigError(
                f"optimizer.embedding_regularizer_mode: 'table' needs every table on the dense kernel, but "
                f"{len(fused)} table(s) are fused ({', '.join(fused[:3])}{', ...' if len(fused) > 3 else ''}: more "
                f"than optimizer.sparse.dense_max_rows={opt.sparse.dense_max_rows} rows); raise dense_max_rows or "
                f"use embedding_regularizer_mode: batch")
    return TrainTask(model)


def build_training_stack(cfg: ExperimentConfig, ctx: DistContext, spec: FeatureSpec) -> TrainingStack:
    """Build the model of ``cfg`` for ``spec``, shard it over the process group of ``ctx``, add its optimisers."""
    task: torch.nn.Module = build_task(cfg, spec, torch.device("meta"))
    if cfg.training.sync_batchnorm:
        task = torch.nn.SyncBatchNorm.convert_sync_batchnorm(task)
    if dense_kernel_tables(task, cfg.optimizer.sparse, cfg.sharding):
        # fbgemm's dense (data_parallel) lookup is an autograd.Function around an op that has no Autograd-key kernel,
        # so torch warns on every backward; its gradients are exact (tests/test_embedding_optimizers.py compares a
        # step with plain autograd), so the warning is silenced rather than shown to every user.
        warnings.filterwarnings("ignore", message=r"fbgemm::dense_embedding_codegen_lookup_function: an autograd")
    dmp = shard_model(task, ctx, cfg.sharding, cfg.optimizer.sparse, cfg.training.batch_size // ctx.world_size)
    optimizer = build_optimizer(dmp, cfg.optimizer)
    return TrainingStack(dmp, optimizer, TrainPipelineSparseDist(dmp, optimizer, ctx.device))
