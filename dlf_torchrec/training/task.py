"""The model as the training pipeline sees it, and its optimisers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchrec.datasets.utils import Batch
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.clipping import GradientClipping, GradientClippingOptimizer
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from dlf_torchrec.config import DenseOptimizerConfig
from dlf_torchrec.models.base import CTRModel


class TrainTask(nn.Module):
    """Adapts a CTRModel to TorchRec's pipeline contract: ``batch -> (loss, (loss, logits, labels))``."""

    def __init__(self, model: CTRModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        output = self.model(batch.dense_features, batch.sparse_features)
        loss = self.model.loss(output, batch.labels)
        return loss, (loss.detach(), output.logits.detach(), batch.labels)


_DENSE_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
}


def build_optimizer(dmp: DistributedModelParallel, dense: DenseOptimizerConfig, grad_clip_norm: float) -> Any:
    """Fused sparse optimiser (inside the sharded tables) + a torch optimiser for the dense parameters."""
    dense_params = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    opt_cls = _DENSE_OPTIMIZERS[dense.name]
    dense_opt: Any = KeyedOptimizerWrapper(
        dense_params, lambda params: opt_cls(params, lr=dense.lr, weight_decay=dense.weight_decay)
    )
    if grad_clip_norm > 0:
        dense_opt = GradientClippingOptimizer(dense_opt, clipping=GradientClipping.NORM, max_gradient=grad_clip_norm)
    return CombinedOptimizer([dmp.fused_optimizer, dense_opt])


def scale_learning_rates(optimizer: Any, factor: float, min_lr: float) -> list[float]:
    """Multiply every param group's lr (dense and fused sparse) by ``factor``, floored at ``min_lr``."""
    lrs = []
    for group in optimizer.param_groups:
        group["lr"] = max(group["lr"] * factor, min_lr)
        lrs.append(group["lr"])
    return lrs
