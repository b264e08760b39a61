"""Everything about ranks and sharding: process group, topology, planner, sharders, DistributedModelParallel.

CPU runs use gloo; CUDA runs use nccl with one GPU per local rank. The same code path runs as a single process
(a world of one, with a private rendezvous), under torchrun and under TorchX.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
from torchrec.distributed.planner.types import ShardingOption
from torchrec.distributed.types import ShardingEnv, ShardingPlan, ShardingType
from torchrec.modules.embedding_configs import PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from dlf_torchrec.config import ShardingConfig, SparseOptimizerConfig
from dlf_torchrec.distenv import rank_env

_SPARSE_OPTIMIZERS = {
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    "adagrad": EmbOptimType.EXACT_ADAGRAD,
    "sgd": EmbOptimType.EXACT_SGD,
    "adam": EmbOptimType.ADAM,
}
_CPU_SPARSE_OPTIMIZERS = ("rowwise_adagrad", "adagrad", "sgd")


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto", timeout_s: int = 1800) -> DistContext:
    """Join (or create) the default process group. Without torchrun/TorchX env vars this is a world of one."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("training.device: 'cuda' requested but no CUDA device is available")
    if "RANK" not in os.environ:
        os.environ.update(rank_env())
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev, backend = torch.device("cuda", local_rank), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        store, _, _ = next(dist.rendezvous("env://", rank, world_size, timeout=timeout))
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            store = _per_attempt(store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    return DistContext(rank, world_size, local_rank, local_world_size, dev, backend)


def _per_attempt(store: dist.Store) -> dist.Store:
    """torchrun shares its rendezvous TCPStore with the workers and keeps it across restarts: without a prefix per
    restart, restarted workers read the dead attempt's gloo address keys ("connectFullMesh failed"). The restart
    count is per agent, so with several agents it only names the attempt while every node restarted as often: after
    one node's worker died, the nodes disagree and the new workers wait forever for each other's keys (pytorch#135712).
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (set by our TorchX component) gives every round a fresh store instead."""
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))
    if nodes > 1 and int(os.environ["RANK"]) == 0:
        print(f"[dlf_torchrec] warning: {nodes} torchrun agents share one rendezvous store across restarts; a restart "
              "after one node's worker failed (--max-restarts) or a membership change can hang. Set "
              "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for multi-node runs (pytorch#135712; docs/reliability.md)",
              file=sys.stderr, flush=True)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"dlf_torchrec/attempt_{attempt}", store)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class AllTypesEmbeddingBagCollectionSharder(EmbeddingBagCollectionSharder):
    """TorchRec offers row_wise / table_row_wise / grid_shard only for CUDA; they run correctly on CPU + gloo too
    (measured, see STACK.md), so this sharder offers every sharding type on every device."""

    def sharding_types(self, compute_device_type: str) -> list[str]:
        return [t.value for t in ShardingType]


def fused_params(opt: SparseOptimizerConfig, device: torch.device) -> dict[str, Any]:
    """Fused FBGEMM optimiser settings for the sharded tables."""
    if device.type != "cuda" and opt.name not in _CPU_SPARSE_OPTIMIZERS:
        raise ValueError(f"optimizer.sparse.name: '{opt.name}' has no CPU kernel in FBGEMM "
                         f"(CPU supports {', '.join(_CPU_SPARSE_OPTIMIZERS)})")
    params: dict[str, Any] = {"optimizer": _SPARSE_OPTIMIZERS[opt.name], "learning_rate": opt.lr, "eps": opt.eps}
    if opt.weight_decay:
        params["weight_decay"] = opt.weight_decay
    return params


def table_rows(model: nn.Module) -> dict[str, int]:
    """Table name -> number of rows, for every EmbeddingBagCollection in ``model``."""
    return {
        cfg.name: cfg.num_embeddings
        for m in model.modules()
        if isinstance(m, EmbeddingBagCollection)
        for cfg in m.embedding_bag_configs()
    }


def mean_pooled_tables(model: nn.Module) -> set[str]:
    """Tables that pool by ``PoolingType.MEAN`` (those serving ``mean`` bag fields, docs/data.md#multi-valued)."""
    return {cfg.name for m in model.modules() if isinstance(m, EmbeddingBagCollection)
            for cfg in m.embedding_bag_configs() if cfg.pooling == PoolingType.MEAN}


def dense_kernel_tables(model: nn.Module, opt: SparseOptimizerConfig, sharding: ShardingConfig) -> set[str]:
    """Tables trained by a torch optimiser on the dense kernel (``optimizer.sparse.kernel``, or every table with
    ``sharding.type: data_parallel``); the rest are fused."""
    tables = table_rows(model)
    if sharding.type == "data_parallel" or opt.kernel == "dense":
        return set(tables)
    if opt.kernel == "fused":
        return set()
    return {name for name, rows in tables.items() if rows <= opt.dense_max_rows}


class OrderedEnumerator(EmbeddingEnumerator):
    """TorchRec's enumerator with a fixed order of the sharding options.

    TorchRec intersects the allowed and the constrained sharding types (and compute kernels) as Python sets, so
    the options of a table come out in an order that depends on the process's string-hash seed; the proposers
    keep the first of equally rated plans, and ties are common (e.g. on one rank), so the chosen plan varied from
    run to run. Sorting by (table, sharding type, compute kernel) in a fixed order (stable, so options of one
    kind keep their generated order) makes the plan a function of the inputs.
    """

    def enumerate(self, module: nn.Module, sharders: list[Any]) -> list[ShardingOption]:
        options = super().enumerate(module, sharders)
        tables: dict[str, int] = {}
        for o in options:
            tables.setdefault(o.fqn, len(tables))
        types = [t.value for t in ShardingType]
        options.sort(key=lambda o: (tables[o.fqn], types.index(o.sharding_type), o.compute_kernel))
        return options


def build_planner(
    model: nn.Module,
    world_size: int,
    local_world_size: int,
    device_type: str,
    sharding: ShardingConfig,
    batch_size_per_rank: int,
    dense_tables: set[str] | None = None,
) -> EmbeddingShardingPlanner:
    """The EmbeddingShardingPlanner for ``model``.

    ``dense_tables`` are replicated (data_parallel, dense kernel: trained by a torch optimiser); a forced
    ``sharding.type`` constrains every other table to it; "auto" lets the planner choose among the fused types.

    Mean-pooled tables are never grid-sharded: TorchRec 1.8 divides row-split bags by their length only under
    row_wise and table_row_wise, so under grid_shard each row shard's partial mean is summed (measured: logits off by
    0.1, tests/test_multivalued_sharding.py). "auto" leaves grid_shard out for them; a forced grid_shard is refused.
    """
    topology = Topology(world_size=world_size, local_world_size=local_world_size, compute_device=device_type)
    dense_tables = dense_tables or set()
    data_parallel = ParameterConstraints(sharding_types=[ShardingType.DATA_PARALLEL.value], compute_kernels=["dense"])
    mean_tables = mean_pooled_tables(model) - dense_tables
    no_grid = [t.value for t in ShardingType if t.value not in (ShardingType.DATA_PARALLEL.value,
                                                                 ShardingType.GRID_SHARD.value)]
    mean_constraint = ParameterConstraints(sharding_types=no_grid)
    if sharding.type == ShardingType.GRID_SHARD.value and mean_tables:
        raise ValueError(f"sharding.type: grid_shard pools mean bags wrongly in TorchRec (tables {sorted(mean_tables)}"
                         f" pool by mean); use another sharding type, or pooling: sum for those bag fields")
    if sharding.type != "auto":
        kernel = ["dense"] if sharding.type == "data_parallel" else None
        forced = ParameterConstraints(sharding_types=[sharding.type], compute_kernels=kernel)
    else:
        # data_parallel tables use the dense kernel (an order of magnitude slower on CPU, STACK.md) and are trained by
        # a torch optimiser instead of the fused one: they are chosen by optimizer.sparse.kernel, never by the planner.
        fused_types = [t.value for t in ShardingType if t.value != ShardingType.DATA_PARALLEL.value]
        forced = ParameterConstraints(sharding_types=fused_types)
    constraints = {name: data_parallel if name in dense_tables else
                   mean_constraint if name in mean_tables and sharding.type == "auto" else forced
                   for name in table_rows(model)}
    enumerator = OrderedEnumerator(topology=topology, batch_size=batch_size_per_rank, constraints=constraints)
    return EmbeddingShardingPlanner(topology=topology, batch_size=batch_size_per_rank, constraints=constraints,
                                    enumerator=enumerator)


def plan_sharding(
    model: nn.Module,
    ctx: DistContext,
    sharding: ShardingConfig,
    sharders: list[Any],
    batch_size_per_rank: int,
    dense_tables: set[str] | None = None,
) -> ShardingPlan:
    """Plan on rank 0 and share the plan with every rank."""
    planner = build_planner(model, ctx.world_size, ctx.local_world_size, ctx.device.type, sharding,
                            batch_size_per_rank, dense_tables)
    pg = dist.GroupMember.WORLD
    assert pg is not None, "init_distributed() must run first"
    return planner.collective_plan(model, sharders, pg)


def shard_model(
    model: nn.Module,
    ctx: DistContext,
    sharding: ShardingConfig,
    sparse_optimizer: SparseOptimizerConfig,
    batch_size_per_rank: int,
) -> DistributedModelParallel:
    """Shard the EmbeddingBagCollections of ``model`` (fused optimiser inside) and wrap the rest in DDP.

    Tables on the dense kernel (see :func:`dense_kernel_tables`) are replicated and left to a torch optimiser.
    """
    dense_tables = dense_kernel_tables(model, sparse_optimizer, sharding)
    fused = fused_params(sparse_optimizer, ctx.device) if len(dense_tables) < len(table_rows(model)) else {}
    sharders: list[Any] = [AllTypesEmbeddingBagCollectionSharder(fused_params=fused)]
    plan = plan_sharding(model, ctx, sharding, sharders, batch_size_per_rank, dense_tables)
    return DistributedModelParallel(
        module=model,
        env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
        device=ctx.device,
        plan=plan,
        sharders=sharders,
    )


def plan_to_dict(plan: ShardingPlan) -> dict[str, dict[str, Any]]:
    """Per table: sharding type, compute kernel and the ranks (with offsets and sizes) of its shards."""
    out: dict[str, dict[str, Any]] = {}
    for module_name, module_plan in sorted(plan.plan.items()):
        for table, ps in sorted(module_plan.items()):  # type: ignore[union-attr]
            shards = ps.sharding_spec.shards if ps.sharding_spec is not None else []
            out[f"{module_name}.{table}" if module_name else table] = {
                "sharding_type": ps.sharding_type,
                "compute_kernel": ps.compute_kernel,
                "ranks": ps.ranks,
                "shards": [{"rank": sh.placement.rank(), "offsets": sh.shard_offsets, "sizes": sh.shard_sizes}
                           for sh in shards],
            }
    return out


def describe_plan(dmp: DistributedModelParallel) -> str:
    """The sharding plan in one line: per (sharding type, compute kernel) the count and names of its tables."""
    kinds: dict[str, list[str]] = {}
    for table, entry in plan_to_dict(dmp.plan).items():
        kinds.setdefault(f"{entry['sharding_type']}/{entry['compute_kernel']}", []).append(table.rsplit(".", 1)[-1])
    return "; ".join(f"{len(names)} tables {kind} ({', '.join(names)})" for kind, names in sorted(kinds.items()))
