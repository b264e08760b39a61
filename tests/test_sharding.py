"""Sharded = unsharded, on 2 gloo ranks, for every sharding type we support on CPU; DCP round trip."""

from __future__ import annotations

import os

import pytest
import torch
from distributed import run_ranks
from torchrec.datasets.utils import Batch
from torchrec.distributed.types import ShardedTensor
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlf_torchrec.config import ShardingConfig, SparseOptimizerConfig, build_config
from dlf_torchrec.data.meta import CategoricalField, FeatureSpec
from dlf_torchrec.models.registry import build_model
from dlf_torchrec.parallel import init_distributed, shard_model
from dlf_torchrec.training import checkpoint as ckpt
from dlf_torchrec.training.task import TrainTask, build_optimizer

SPEC = FeatureSpec(
    categorical=tuple(CategoricalField(f"C{i}", v) for i, v in enumerate([50, 1000, 7, 300])),
    dense=("I1", "I2"),
)
DIM, BATCH_PER_RANK = 8, 16


def _global_batch(seed: int, world_size: int) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(world_size):
        ids = torch.stack([torch.randint(1, f.vocab_size, (BATCH_PER_RANK,), generator=g) for f in SPEC.categorical])
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=SPEC.categorical_names, values=ids.flatten(),
            lengths=torch.ones(ids.numel(), dtype=torch.int32),
        )
        batches.append(Batch(dense_features=torch.randn(BATCH_PER_RANK, len(SPEC.dense), generator=g),
                             sparse_features=kjt, labels=torch.randint(0, 2, (BATCH_PER_RANK,), generator=g).float()))
    return batches


def _copy_into_sharded(dmp: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    state = dmp.state_dict()
    for key, value in state.items():
        src = reference[key.removeprefix("model.")]
        if isinstance(value, ShardedTensor):
            for shard in value.local_shards():
                index = tuple(slice(o, o + s) for o, s in zip(shard.metadata.shard_offsets, shard.metadata.shard_sizes,
                                                             strict=True))
                shard.tensor.copy_(src[index])
        else:
            value.copy_(src)
    dmp.load_state_dict(state)


def _sharded_equals_unsharded(sharding_type: str) -> float:
    ctx = init_distributed("cpu")
    cfg = build_config({"model": {"name": "dcnv2", "hidden_units": [32, 16]}})
    torch.manual_seed(0)
    reference = build_model("dcnv2", SPEC, DIM, 0.1, cfg.model).eval()
    dmp = shard_model(TrainTask(build_model("dcnv2", SPEC, DIM, 0.1, cfg.model, device=torch.device("meta"))),
                      ctx, ShardingConfig(type=sharding_type), SparseOptimizerConfig(), BATCH_PER_RANK)
    plan_types = {ps.sharding_type for mp in dmp.plan.plan.values() for ps in mp.values()}
    assert plan_types == {sharding_type}, plan_types
    _copy_into_sharded(dmp, reference.state_dict())
    dmp.eval()
    batch = _global_batch(1, ctx.world_size)[ctx.rank]
    with torch.no_grad():
        _, (_, logits, _) = dmp(batch)
        expected = reference(batch.dense_features, batch.sparse_features).logits
    return float((logits - expected).abs().max())


@pytest.mark.parametrize(
    "sharding_type", ["table_wise", "column_wise", "row_wise", "table_row_wise", "table_column_wise", "grid_shard"]
)
def test_sharded_forward_equals_unsharded(sharding_type: str, tmp_path) -> None:
    diffs = run_ranks(_sharded_equals_unsharded, 2, str(tmp_path), sharding_type)
    assert max(diffs) < 1e-6, diffs


def _checkpoint_round_trip(ckpt_dir: str) -> list[float]:
    ctx = init_distributed("cpu")
    cfg = build_config({"model": {"name": "dcnv2", "hidden_units": [32, 16]}})
    torch.manual_seed(0)
    dmp = shard_model(TrainTask(build_model("dcnv2", SPEC, DIM, 0.1, cfg.model, device=torch.device("meta"))),
                      ctx, ShardingConfig(type="table_wise"), SparseOptimizerConfig(), BATCH_PER_RANK)
    optimizer = build_optimizer(dmp, cfg.optimizer)
    batches = [b[ctx.rank] for b in (_global_batch(s, ctx.world_size) for s in range(4))]

    def step(batch: Batch) -> float:
        optimizer.zero_grad()
        loss, _ = dmp(batch)
        loss.backward()
        optimizer.step()
        return float(loss)

    step(batches[0])
    step(batches[1])
    ckpt.save_checkpoint(os.path.join(ckpt_dir, "step_2"), dmp, optimizer, {"global_step": 2})
    after_save = [step(batches[2]), step(batches[3])]
    state = ckpt.load_checkpoint(os.path.join(ckpt_dir, "step_2"), dmp, optimizer)
    assert state == {"global_step": 2}
    after_load = [step(batches[2]), step(batches[3])]
    return after_save + after_load


def test_dcp_checkpoint_round_trip_is_exact(tmp_path) -> None:
    for losses in run_ranks(_checkpoint_round_trip, 2, str(tmp_path), str(tmp_path / "ckpt")):
        assert losses[:2] == losses[2:], losses
    assert ckpt.periodic_checkpoints(str(tmp_path / "ckpt")) == [str(tmp_path / "ckpt" / "step_2")]


_PLAN_SCRIPT = """
import json, torch
from dlf_torchrec.config import ShardingConfig, build_config
from dlf_torchrec.data.meta import CategoricalField, FeatureSpec
from dlf_torchrec.models.registry import build_model
from dlf_torchrec.parallel import AllTypesEmbeddingBagCollectionSharder, build_planner, plan_to_dict
from dlf_torchrec.training.task import TrainTask
# The synthetic default's 26 Criteo-like tables (vocab sizes of configs/synthetic/dcnv2.yaml's data), dim 16.
sizes = [1460, 583, 305, 24, 12517, 633, 14, 9, 5683, 3194, 1000, 3, 5, 500, 200, 90000, 30000, 4000, 27, 11, 8000,
         60, 4, 900, 50, 2]
spec = FeatureSpec(categorical=tuple(CategoricalField(f"C{i}", v) for i, v in enumerate(sizes)))
cfg = build_config({"model": {"name": "dcnv2", "hidden_units": [32]}})
model = TrainTask(build_model("dcnv2", spec, 16, 1e-4, cfg.model, device=torch.device("meta")))
sharders = [AllTypesEmbeddingBagCollectionSharder()]
plans = {n: plan_to_dict(build_planner(model, n, n, "cpu", ShardingConfig(type="auto"), 4096 // n)
                         .plan(model, sharders)) for n in (1, 2, 8)}
print(json.dumps(plans, sort_keys=True))
"""


@pytest.mark.slow
def test_auto_plan_is_a_function_of_config_and_world_size() -> None:
    """The same model planned in processes with different string-hash seeds (which reorder TorchRec's sets of
    sharding types) at 1, 2 and 8 ranks: one plan per world size."""
    import subprocess
    import sys

    plans = set()
    for seed in range(5):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        proc = subprocess.run([sys.executable, "-c", _PLAN_SCRIPT], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        plans.add(proc.stdout.strip().splitlines()[-1])
    assert len(plans) == 1, f"{len(plans)} different plans from 5 processes"


def test_pooled_embeddings_are_taken_in_spec_order_whatever_the_plan_order() -> None:
    """A sharded EBC returns its keys in plan order; the tokens must come out in spec order (values and gradients),
    without a copy when the orders already match, and unknown keys must not be fed silently."""
    from torchrec.sparse.jagged_tensor import KeyedTensor

    from dlf_torchrec.models.embedding import spec_ordered_tokens

    names, dim = ["a", "b", "c"], 2
    per_field = {n: torch.full((4, dim), float(i + 1)) for i, n in enumerate(names)}
    plan_order = ["c", "a", "b"]
    values = torch.cat([per_field[n] for n in plan_order], dim=1).requires_grad_()
    tokens = spec_ordered_tokens(KeyedTensor(plan_order, [dim] * 3, values), names, dim)
    assert torch.equal(tokens, torch.stack([per_field[n] for n in names], dim=1))
    (tokens * torch.arange(3.0).view(1, 3, 1)).sum().backward()  # field a weighs 0, b 1, c 2
    assert torch.equal(values.grad[0], torch.tensor([2.0, 2.0, 0.0, 0.0, 1.0, 1.0]))
    same = torch.cat([per_field[n] for n in names], dim=1)
    assert spec_ordered_tokens(KeyedTensor(names, [dim] * 3, same), names, dim).data_ptr() == same.data_ptr()
    with pytest.raises(ValueError, match="expected"):
        spec_ordered_tokens(KeyedTensor(["a", "b", "x"], [dim] * 3, same), names, dim)
