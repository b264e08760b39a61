"""Embedding optimisers and regularisers: the dense kernel trains tables exactly like plain autograd (the fbgemm
"autograd kernel was not registered" warning is harmless), whole-table L2 = FuxiCTR's lambda/2 * ||E||^2 in the
loss, batch L2 = the looked-up rows only, kernel choice per table size, and config errors naming the key."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from distributed import run_ranks
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlf_torchrec.config import ConfigError, build_config
from dlf_torchrec.data.meta import CategoricalField, FeatureSpec
from dlf_torchrec.parallel import dense_kernel_tables, init_distributed
from dlf_torchrec.training.stack import build_task, build_training_stack

SPEC = FeatureSpec(categorical=tuple(CategoricalField(f"C{i}", v) for i, v in enumerate([20, 300, 7])), dense=("I1",))
DIM, BATCH, LR = 4, 32, 0.5


def _cfg(**optimizer: Any) -> Any:
    return build_config({
        "model": {"name": "dnn", "hidden_units": [8], "batch_norm": False},
        "features": {"embedding_dim": DIM, "init_std": 0.1},
        "optimizer": {"dense": {"name": "sgd", "lr": LR}, "grad_clip_norm": 0.0, **optimizer},
        "training": {"batch_size": BATCH},
    })


def _batch() -> Batch:
    g = torch.Generator().manual_seed(3)
    ids = torch.stack([torch.randint(1, f.vocab_size // 2, (BATCH,), generator=g) for f in SPEC.categorical])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=SPEC.categorical_names, values=ids.flatten(),
                                             lengths=torch.ones(ids.numel(), dtype=torch.int32))
    return Batch(dense_features=torch.randn(BATCH, 1, generator=g), sparse_features=kjt,
                 labels=torch.randint(0, 2, (BATCH,), generator=g).float())


def _one_step(mode: str, lam: float) -> float:
    """Max |difference| between the tables after one step of the sharded stack and after one plain-autograd SGD
    step on loss + (lambda/2 * ||E||^2 whole tables | the model's batch penalty)."""
    ctx = init_distributed("cpu")
    cfg = _cfg(sparse={"name": "sgd", "lr": LR, "kernel": "dense"}, embedding_regularizer=lam,
               embedding_regularizer_mode=mode)
    torch.manual_seed(0)
    reference = build_task(cfg, SPEC)
    stack = build_training_stack(cfg, ctx, SPEC)
    before = {k: v.detach().clone() for k, v in reference.state_dict().items()}
    stack.dmp.load_state_dict(dict(before))  # DMP pops the keys it loads
    batch = _batch()
    stack.pipeline.progress(iter([batch]))
    stack.pipeline.detach()

    reference.train()
    loss, _ = reference(batch)
    tables = [p for n, p in reference.named_parameters() if "embedding_bags" in n]
    if mode == "table":
        loss = loss + 0.5 * lam * sum(t.pow(2).sum() for t in tables)
    loss.backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= LR * p.grad
    got = {k: v for k, v in stack.dmp.state_dict().items() if "embedding_bags" in k}
    want = reference.state_dict()
    assert got, "no table parameters found"
    assert any((want[k] - before[k]).abs().max() > 1e-4 for k in got), "the tables did not move"
    return max(float((got[k] - want[k]).abs().max()) for k in got)


@pytest.mark.parametrize(("mode", "lam"), [("table", 0.0), ("table", 0.3), ("batch", 0.3)])
def test_dense_kernel_step_equals_plain_autograd(tmp_path, mode: str, lam: float) -> None:
    (diff,) = run_ranks(_one_step, 1, str(tmp_path), mode, lam)
    assert diff < 1e-6, diff


def test_kernel_choice_by_table_size() -> None:
    task = build_task(_cfg(sparse={"name": "adam", "kernel": "auto", "dense_max_rows": 100}), SPEC,
                      torch.device("meta"))
    cfg = _cfg(sparse={"name": "adam", "kernel": "auto", "dense_max_rows": 100})
    assert dense_kernel_tables(task, cfg.optimizer.sparse, cfg.sharding) == {"t_C0", "t_C2"}
    cfg = _cfg(sparse={"name": "adam", "kernel": "dense"})
    assert dense_kernel_tables(task, cfg.optimizer.sparse, cfg.sharding) == {"t_C0", "t_C1", "t_C2"}
    cfg = _cfg()
    assert dense_kernel_tables(task, cfg.optimizer.sparse, cfg.sharding) == set()


def test_table_mode_with_fused_tables_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="embedding_regularizer_mode"):
        _cfg(embedding_regularizer=0.1)  # default kernel: fused
    cfg = _cfg(sparse={"name": "adam", "kernel": "auto", "dense_max_rows": 100}, embedding_regularizer=0.1)
    with pytest.raises(ConfigError, match=r"1 table\(s\) are fused \(t_C1"):
        build_task(cfg, SPEC, torch.device("meta"))


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="optimizer.sparse.name.*rowwise_adagrad"):
        _cfg(sparse={"kernel": "dense"})
    with pytest.raises(ConfigError, match="sharding.type.*data_parallel.*optimizer.sparse.kernel"):
        build_config({"sharding": {"type": "data_parallel"}})
    with pytest.raises(ConfigError, match="optimizer.embedding_regularizer: must be >= 0"):
        _cfg(embedding_regularizer=-1.0)


def test_batch_mode_penalty_only_in_training() -> None:
    task = build_task(_cfg(embedding_regularizer=0.2, embedding_regularizer_mode="batch"), SPEC)
    batch = _batch()
    out = task.model(batch.dense_features, batch.sparse_features)
    tokens = task.model.embedding(batch.sparse_features, batch.dense_features)
    want = 0.5 * 0.2 * (tokens[:, 1:].pow(2).sum() + task.model.embedding.dense_tokens.weight.pow(2).sum())
    torch.testing.assert_close(out.aux["emb_reg"].sum(), want)
    task.model.eval()
    assert "emb_reg" not in task.model(batch.dense_features, batch.sparse_features).aux
