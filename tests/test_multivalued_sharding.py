"""Multi-valued (bag) fields on 2 gloo ranks: bags of mixed lengths (empty ones included), a table shared by a
single-id field and a bag, a weighted bag; sharded == unsharded for every sharding type, the DCP checkpoint round
trip, and the 2-rank checkpoint read back by the unsharded model (resharding 2 -> 1). Mean-pooled tables under
grid_shard are refused (TorchRec pools them wrongly there): the weighted spec, whose tables all pool by sum with the
mean carried by the weights, covers grid_shard."""

from __future__ import annotations

import os

import pytest
import torch
from distributed import run_ranks
from test_resharding import _step
from test_sharding import _copy_into_sharded
from torchrec.datasets.utils import Batch

from dlf_torchrec.config import ShardingConfig, SparseOptimizerConfig, build_config
from dlf_torchrec.data.jagged import batch_kjt
from dlf_torchrec.data.meta import BagField, CategoricalField, FeatureSpec
from dlf_torchrec.models.registry import build_model
from dlf_torchrec.parallel import init_distributed, shard_model
from dlf_torchrec.training import checkpoint as ckpt
from dlf_torchrec.training.task import TrainTask, build_optimizer

CATEGORICAL = (CategoricalField("item", 40), CategoricalField("user", 30))
HIST = BagField("hist", 40, "item", "mean")  # shares the item table
TAGS = BagField("tags", 25, "tags", "sum")
UNWEIGHTED = FeatureSpec(categorical=CATEGORICAL, dense=("price",), bags=(HIST, TAGS))
WEIGHTED = FeatureSpec(categorical=CATEGORICAL, dense=("price",),
                       bags=(HIST, BagField("tags", 25, "tags", "sum", weighted=True)))
SPECS = {"unweighted": UNWEIGHTED, "weighted": WEIGHTED}
TYPES = ["table_wise", "column_wise", "row_wise", "table_row_wise", "table_column_wise", "grid_shard", "data_parallel"]
DIM, BATCH_PER_RANK = 8, 12


def bag_batch(spec: FeatureSpec, seed: int, batch: int = BATCH_PER_RANK) -> Batch:
    """A batch whose bags hold 0..5 items (every third bag empty)."""
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(1, f.vocab_size, (batch,), generator=g) for f in spec.categorical], dim=1)
    lengths = torch.randint(0, 6, (batch, len(spec.bags)), generator=g)
    lengths[::3] = 0
    values = torch.cat([torch.randint(1, b.vocab_size, (int(lengths[:, j].sum()),), generator=g)
                        for j, b in enumerate(spec.bags)])
    weights = torch.rand(values.numel(), generator=g)
    return Batch(dense_features=torch.randn(batch, len(spec.dense), generator=g),
                 sparse_features=batch_kjt(spec, sparse, lengths, values, weights),
                 labels=torch.randint(0, 2, (batch,), generator=g).float())


def _model(spec: FeatureSpec, device: str = "cpu") -> torch.nn.Module:
    cfg = build_config({"model": {"name": "dcnv2", "hidden_units": [16]}})
    return build_model("dcnv2", spec, DIM, 0.1, cfg.model, device=torch.device(device))


def _sharded_equals_unsharded() -> dict[str, float]:
    ctx = init_distributed("cpu")
    diffs = {}
    for name, spec in SPECS.items():
        torch.manual_seed(0)
        reference = _model(spec).eval()
        batch = bag_batch(spec, 1 + ctx.rank)
        with torch.no_grad():
            expected = reference(batch.dense_features, batch.sparse_features).logits
        for sharding_type in TYPES:
            if sharding_type == "grid_shard" and name == "unweighted":  # mean-pooled tables: refused
                with pytest.raises(ValueError, match="grid_shard pools mean bags wrongly"):
                    shard_model(TrainTask(_model(spec, "meta")), ctx, ShardingConfig(type=sharding_type),
                                SparseOptimizerConfig(), BATCH_PER_RANK)
                continue
            dmp = shard_model(TrainTask(_model(spec, "meta")), ctx, ShardingConfig(type=sharding_type),
                              SparseOptimizerConfig(), BATCH_PER_RANK)
            plan_types = {ps.sharding_type for mp in dmp.plan.plan.values() for ps in mp.values()}
            assert plan_types == {sharding_type}, plan_types
            _copy_into_sharded(dmp, reference.state_dict())
            dmp.eval()
            with torch.no_grad():
                _, (_, logits, _) = dmp(batch)
            diffs[f"{name}/{sharding_type}"] = float((logits - expected).abs().max())
    return diffs


def test_bags_sharded_forward_equals_unsharded_for_every_sharding_type(tmp_path) -> None:
    for diffs in run_ranks(_sharded_equals_unsharded, 2, str(tmp_path)):
        worst = sorted(diffs.items(), key=lambda kv: -kv[1])
        assert len(diffs) == 2 * len(TYPES) - 1 and worst[0][1] < 1e-6, worst


def _checkpoint_round_trip(ckpt_dir: str, sharding_type: str) -> dict:
    ctx = init_distributed("cpu")
    cfg = build_config({"model": {"name": "dcnv2", "hidden_units": [16]}})
    torch.manual_seed(0)
    dmp = shard_model(TrainTask(_model(WEIGHTED, "meta")), ctx, ShardingConfig(type=sharding_type),
                      SparseOptimizerConfig(), BATCH_PER_RANK)
    optimizer = build_optimizer(dmp, cfg.optimizer)
    batches = [bag_batch(WEIGHTED, 10 * s + ctx.rank) for s in range(4)]

    def step(batch: Batch) -> float:
        return _step(dmp, optimizer, batch)

    step(batches[0])
    step(batches[1])
    ckpt.save_checkpoint(os.path.join(ckpt_dir, "step_2"), dmp, optimizer, {"global_step": 2})
    # The checkpoint holds the ranks' averaged BatchNorm statistics (the save leaves each rank its own): predict
    # with those, as Trainer.evaluate does; train-mode losses do not read the running statistics.
    ckpt.average_norm_statistics(dmp)
    dmp.eval()
    with torch.no_grad():
        _, (_, logits, _) = dmp(bag_batch(WEIGHTED, 99 + ctx.rank))
    dmp.train()
    after_save = [step(batches[2]), step(batches[3])]
    assert ckpt.load_checkpoint(os.path.join(ckpt_dir, "step_2"), dmp, optimizer) == {"global_step": 2}
    after_load = [step(batches[2]), step(batches[3])]
    return {"losses": after_save + after_load, "logits": logits.tolist()}


@pytest.mark.parametrize("sharding_type", ["table_wise", "row_wise"])
def test_bags_checkpoint_round_trip_and_unsharded_reload(sharding_type: str, tmp_path) -> None:
    results = run_ranks(_checkpoint_round_trip, 2, str(tmp_path), str(tmp_path / "ckpt"), sharding_type)
    for r in results:
        assert r["losses"][:2] == r["losses"][2:], r["losses"]
    model = ckpt.load_unsharded(str(tmp_path / "ckpt" / "step_2"), _model(WEIGHTED)).eval()
    for rank, r in enumerate(results):  # the 2-rank checkpoint in one process gives each rank's predictions
        batch = bag_batch(WEIGHTED, 99 + rank)
        with torch.no_grad():
            logits = model(batch.dense_features, batch.sparse_features).logits
        torch.testing.assert_close(logits, torch.tensor(r["logits"]), rtol=0, atol=1e-6)
