"""Checkpoints move between world sizes (2 -> 1, 1 -> 2 gloo ranks) and export to an unsharded model, with the
writer's predictions reproduced exactly on a fixed batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
from distributed import run_ranks
from torchrec.datasets.utils import Batch
from torchrec.distributed.types import ShardedTensor
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlf_torchrec.config import ShardingConfig, build_config
from dlf_torchrec.data.meta import CategoricalField, DatasetMeta
from dlf_torchrec.models.registry import build_model
from dlf_torchrec.parallel import init_distributed, shard_model
from dlf_torchrec.run import build_unsharded
from dlf_torchrec.training import checkpoint as ckpt
from dlf_torchrec.training.task import TrainTask, build_optimizer, scale_learning_rates

FIELDS = [CategoricalField(f"C{i}", v) for i, v in enumerate([50, 1000, 7, 300])]
DENSE = ["I1", "I2"]
META = DatasetMeta(name="tiny", source_format="synthetic", categorical=FIELDS, dense=DENSE, splits={})
DIM, BATCH = 8, 16
MODEL = {"name": "dcnv2", "hidden_units": [32, 16], "batch_norm": True}


def _cfg(sharding_type: str = "auto"):
    raw: dict = {"model": MODEL, "features": {"embedding_dim": DIM}}
    if sharding_type == "data_parallel":  # replicated tables are trained by a torch optimiser (the dense kernel)
        raw["sharding"] = {"type": "data_parallel"}
        raw["optimizer"] = {"sparse": {"name": "adagrad", "lr": 0.05, "kernel": "dense"}}
    return build_config(raw)


def _batch(seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(1, f.vocab_size, (BATCH,), generator=g) for f in FIELDS])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=[f.name for f in FIELDS], values=ids.flatten(),
                                             lengths=torch.ones(ids.numel(), dtype=torch.int32))
    return Batch(dense_features=torch.randn(BATCH, len(DENSE), generator=g), sparse_features=kjt,
                 labels=torch.randint(0, 2, (BATCH,), generator=g).float())


FIXED_SEED = 12345  # the prediction batch: identical on every rank and in the unsharded model


def _build(sharding_type: str):
    ctx = init_distributed("cpu")
    cfg = _cfg(sharding_type)
    torch.manual_seed(0)
    model = build_model("dcnv2", META.feature_spec, DIM, cfg.features.init_std, cfg.model, device=torch.device("meta"))
    dmp = shard_model(TrainTask(model), ctx, ShardingConfig(type=sharding_type), cfg.optimizer.sparse, BATCH)
    return ctx, cfg, dmp, build_optimizer(dmp, cfg.optimizer)


@torch.no_grad()
def _predict(dmp: torch.nn.Module) -> list[float]:
    ckpt.average_norm_statistics(dmp)  # as Trainer.evaluate: every rank predicts with one model
    dmp.eval()
    _, (_, logits, _) = dmp(_batch(FIXED_SEED))
    dmp.train()
    return logits.tolist()


def _step(dmp: torch.nn.Module, optimizer, batch: Batch) -> float:
    optimizer.zero_grad()
    loss, _ = dmp(batch)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _optimizer_summary(optimizer) -> dict[str, float]:
    """Per optimiser-state tensor its global sum (sharded states summed over every rank's shards), plus the lrs."""
    sharded: dict[str, float] = {}
    replicated: dict[str, float] = {}
    for key, states in optimizer.state_dict()["state"].items():
        for name, value in states.items():
            if isinstance(value, ShardedTensor):
                sharded[f"{key}.{name}"] = sum(float(s.tensor.double().sum()) for s in value.local_shards())
            elif isinstance(value, torch.Tensor):
                replicated[f"{key}.{name}"] = float(value.double().sum())
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, sharded)
    out: dict = dict(replicated)
    for part in gathered:  # a table-wise table's state lives on its owner rank only
        for key, value in part.items():
            out[key] = out.get(key, 0.0) + value
    out["lrs"] = sorted(g["lr"] for g in optimizer.param_groups)
    return out


def _write(path: str, sharding_type: str) -> dict:
    """Train 3 steps (non-trivial weights, BatchNorm stats, optimiser state and a decayed lr), save, predict.

    Each rank trains on its own batches, so the rank-local BatchNorm running stats differ until the save averages
    them (DCP stores one copy of a replicated tensor): every writer rank and every reader then predict alike.
    """
    ctx, _, dmp, optimizer = _build(sharding_type)
    for s in range(3):
        _step(dmp, optimizer, _batch(100 * s + ctx.rank))
    scale_learning_rates(optimizer, 0.5, 1e-6)  # as LR-on-plateau would: the lrs must survive the reshard
    ckpt.save_checkpoint(path, dmp, optimizer, {"global_step": 3})
    return {"logits": _predict(dmp), "optim": _optimizer_summary(optimizer)}


def _read(path: str, sharding_type: str) -> dict:
    _, _, dmp, optimizer = _build(sharding_type)
    state = ckpt.load_checkpoint(path, dmp, optimizer)
    assert state == {"global_step": 3}, state
    return {"logits": _predict(dmp), "optim": _optimizer_summary(optimizer)}


@pytest.mark.parametrize(("writers", "readers", "sharding_type"), [(2, 1, "row_wise"), (1, 2, "table_wise")])
def test_checkpoint_reshards_across_world_sizes(tmp_path, writers: int, readers: int, sharding_type: str) -> None:
    path = str(tmp_path / "ckpt" / "step_00000003")
    (tmp_path / "w").mkdir()
    (tmp_path / "r").mkdir()
    written = run_ranks(_write, writers, str(tmp_path / "w"), path, sharding_type)
    assert ckpt.is_complete(path) and not os.path.exists(path + ckpt.PARTIAL)
    read = run_ranks(_read, readers, str(tmp_path / "r"), path, sharding_type)
    reference = written[0]
    for w in written[1:]:  # every writer rank predicted the same fixed batch
        assert w["logits"] == reference["logits"]
    for r in read:
        # Forward after the reshard: identical predictions (exact on CPU; 1e-6 allows for reduction order).
        assert torch.allclose(torch.tensor(r["logits"]), torch.tensor(reference["logits"]), atol=1e-6, rtol=0)
        # Optimiser state resharded too (fused sparse row-wise Adagrad state, dense Adam moments, the lrs).
        assert r["optim"].keys() == reference["optim"].keys()
        for key, value in reference["optim"].items():
            assert r["optim"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key

    # Export to a plain state dict: the unsharded CPU model predicts what the sharded writer predicted.
    cfg = _cfg()
    model = build_model(cfg.model_name, META.feature_spec, DIM, cfg.features.init_std, cfg.model)
    ckpt.load_unsharded(path, model).eval()
    state = model.state_dict()
    assert all(isinstance(v, torch.Tensor) and not v.is_meta and v.device.type == "cpu" for v in state.values())
    batch = _batch(FIXED_SEED)
    with torch.no_grad():
        logits = model(batch.dense_features, batch.sparse_features).logits
    assert torch.allclose(logits, torch.tensor(reference["logits"]), atol=1e-6, rtol=0), \
        (logits - torch.tensor(reference["logits"])).abs().max()


# Every type the planner may pick, plus "auto" (a mix of types per table). Each fused type's checkpoint is read under
# the next fused type, so every reader meets a checkpoint of another plan (and another world size).
# data_parallel tables are trained by the dense optimiser, not the fused sparse one: their optimiser state has
# another form, so a data_parallel checkpoint is read as data_parallel (switching fails in DCP: missing keys).
FUSED_TYPES = ["table_wise", "column_wise", "row_wise", "table_row_wise", "table_column_wise", "grid_shard", "auto"]
PLAN_TYPES = [*FUSED_TYPES, "data_parallel"]
READ_PAIRS = [(t, FUSED_TYPES[(i + 1) % len(FUSED_TYPES)]) for i, t in enumerate(FUSED_TYPES)]
READ_PAIRS.append(("data_parallel", "data_parallel"))
# On one rank every type degenerates to whole tables: a few of them cover the 1-rank layouts.
ONE_RANK_PAIRS = [("table_wise", "table_column_wise"), ("auto", "auto"), ("data_parallel", "data_parallel")]
NEXT_STEPS = (200, 300)  # the batches of the two training steps after a save/load


def _continue(dmp: torch.nn.Module, optimizer) -> dict:
    """Predictions on the fixed batch, then the losses of the next two training steps (the second one shows the
    first update, i.e. the restored optimiser state and learning rates)."""
    return {"logits": _predict(dmp), "losses": [_step(dmp, optimizer, _batch(s)) for s in NEXT_STEPS]}


def _write_all(root: str, types: list[str] = PLAN_TYPES) -> dict:
    """A checkpoint per plan type under ``root/<type>`` (3 steps, a decayed lr); the writer's continuation."""
    out = {}
    for sharding_type in types:
        _, _, dmp, optimizer = _build(sharding_type)
        for s in range(3):
            _step(dmp, optimizer, _batch(100 * s))
        scale_learning_rates(optimizer, 0.5, 1e-6)
        ckpt.save_checkpoint(os.path.join(root, sharding_type), dmp, optimizer, {"global_step": 3})
        out[sharding_type] = _continue(dmp, optimizer)
    return out


def _read_all(roots: list[str], write_root: str | None = None, pairs: list[tuple[str, str]] = READ_PAIRS,
              more_roots: tuple[str, ...] = (), more_pairs: list[tuple[str, str]] = ONE_RANK_PAIRS) -> dict:
    """Each checkpoint of ``pairs`` under every root (and of ``more_pairs`` under ``more_roots``), loaded under the
    paired plan; then optionally write a checkpoint per plan type under ``write_root``."""
    out: dict = {}
    for root, written_as, plan in [*((r, *p) for r in roots for p in pairs),
                                   *((r, *p) for r in more_roots for p in more_pairs)]:
        _, _, dmp, optimizer = _build(plan)
        ckpt.load_checkpoint(os.path.join(root, written_as), dmp, optimizer)
        out[f"{os.path.basename(root)}:{written_as}->{plan}"] = _continue(dmp, optimizer)
    return {"read": out, "written": _write_all(write_root) if write_root else None}


def _check_reads(reads: list[dict], written: dict[str, dict], world_size: int) -> None:
    for rank, result in enumerate(reads):
        for key, got in result["read"].items():
            root, pair = key.split(":")
            want = written[root][pair.split("->")[0]]
            where = f"{root} read on {world_size} ranks, {pair}, rank {rank}"
            err = (torch.tensor(got["logits"]) - torch.tensor(want["logits"])).abs().max()
            assert err <= 1e-6, f"{where}: predictions differ by {float(err):.3g}"
            assert got["losses"] == pytest.approx(want["losses"], abs=1e-6, rel=0), where


@pytest.mark.slow
def test_checkpoint_loads_at_any_world_size_and_plan(tmp_path) -> None:
    """2 -> 4, 2 -> 8, 1 -> 8 and 8 -> 2 ranks, every plan type read under another: identical predictions on a fixed
    batch and identical losses of the next two training steps (the writer's continuation is the reference).

    Before the fix, a table's embedding landed in another field's slot whenever the plan's output key order
    changed (e.g. table_wise 1 -> 8: predictions off by 0.07).
    """
    roots = {n: str(tmp_path / f"w{n}") for n in (1, 2, 8)}
    written: dict[str, dict] = {}
    for n, types in ((1, [t for t, _ in ONE_RANK_PAIRS]), (2, PLAN_TYPES)):
        (tmp_path / f"out_w{n}").mkdir()
        written[f"w{n}"] = run_ranks(_write_all, n, str(tmp_path / f"out_w{n}"), roots[n], types)[0]
    (tmp_path / "out_r4").mkdir()
    _check_reads(run_ranks(_read_all, 4, str(tmp_path / "out_r4"), [roots[2]]), written, 4)
    (tmp_path / "out_r8").mkdir()  # 8 ranks read the 2- and 1-rank checkpoints, then write their own
    results = run_ranks(_read_all, 8, str(tmp_path / "out_r8"), [roots[2]], roots[8], READ_PAIRS,
                        [roots[1]], ONE_RANK_PAIRS)
    _check_reads(results, written, 8)
    written["w8"] = results[0]["written"]
    (tmp_path / "out_r2").mkdir()
    _check_reads(run_ranks(_read_all, 2, str(tmp_path / "out_r2"), [roots[8]]), written, 2)


def test_export_rejects_incomplete_checkpoint(tmp_path) -> None:
    (tmp_path / "step_00000001.partial").mkdir()
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ckpt.load_unsharded(str(tmp_path / "step_00000001.partial"), build_unsharded(_cfg(), META.feature_spec))
