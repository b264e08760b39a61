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

from dlf_torchrec.config import OptimizerConfig
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


_TORCH_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
}
# Parameters of tables on the dense kernel: DMP names them "<ebc path>.embedding_bags.<table>.weight".
_TABLE_PARAM = ".embedding_bags."


def _torch_optimizer(
    params: dict[str, torch.Tensor], name: str, lr: float, weight_decay: float, eps: float | None, clip: float
) -> Any:
    opt_cls = _TORCH_OPTIMIZERS[name]
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}
    if eps is not None and name != "sgd":
        kwargs["eps"] = eps
    opt: Any = KeyedOptimizerWrapper(params, lambda ps: opt_cls(ps, **kwargs))
    if clip > 0:
        opt = GradientClippingOptimizer(opt, clipping=GradientClipping.NORM, max_gradient=clip)
    return opt


def build_optimizer(dmp: DistributedModelParallel, cfg: OptimizerConfig) -> CombinedOptimizer:
    """All optimisers of a sharded model, as one CombinedOptimizer.

    * fused tables: the FBGEMM optimiser inside backward (``dmp.fused_optimizer``);
    * dense-kernel tables (``optimizer.sparse.kernel``): a torch optimiser named by ``optimizer.sparse``, whose L2
      weight decay carries the whole-table embedding regulariser (gradient + lambda * E on every row every step, the
      gradient of FuxiCTR's lambda/2 * ||E||^2);
    * every other parameter: the dense optimiser (``optimizer.dense``).
    Both torch optimisers clip their own gradients' global norm at ``optimizer.grad_clip_norm``.
    """
    params = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    tables = {name: p for name, p in params.items() if _TABLE_PARAM in name}
    net = {name: p for name, p in params.items() if name not in tables}
    dense = cfg.dense
    optimizers: list[Any] = [
        dmp.fused_optimizer,
        _torch_optimizer(net, dense.name, dense.lr, dense.weight_decay, None, cfg.grad_clip_norm),
    ]
    if tables:
        sparse = cfg.sparse
        table_l2 = cfg.embedding_regularizer if cfg.embedding_regularizer_mode == "table" else 0.0
        optimizers.append(_torch_optimizer(tables, sparse.name, sparse.lr, sparse.weight_decay + table_l2,
                                           sparse.eps, cfg.grad_clip_norm))
    return CombinedOptimizer(optimizers)


def scale_learning_rates(optimizer: Any, factor: float, min_lr: float) -> list[float]:
    """Multiply every param group's lr (dense and fused sparse) by ``factor``, floored at ``min_lr``."""
    lrs = []
    for group in optimizer.param_groups:
        group["lr"] = max(group["lr"] * factor, min_lr)
        lrs.append(group["lr"])
    return lrs


# What each optimiser of build_optimizer's CombinedOptimizer trains, in its order.
OPTIMIZER_ROLES = ("sparse", "dense", "tables")


def learning_rates(optimizer: Any) -> dict[str, float]:
    """The current lr of each optimiser of :func:`build_optimizer` by role (``sparse``: fused tables, ``dense``:
    the network, ``tables``: dense-kernel tables); the first param group's lr stands for the optimiser."""
    out = {}
    for i, (_, opt) in enumerate(getattr(optimizer, "optimizers", [])):
        groups = list(opt.param_groups)
        if groups:
            out[OPTIMIZER_ROLES[i] if i < len(OPTIMIZER_ROLES) else f"opt{i}"] = float(groups[0]["lr"])
    return out
