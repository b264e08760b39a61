"""Training throughput with multi-valued (bag) fields: TorchRec's fused EmbeddingBagCollection vs per-field
``nn.EmbeddingBag`` tables, in one run, on one process.

Data: two single-valued fields (``user``, ``item``) and ``--bags`` bag fields (``bag1``..) whose lengths are uniform
on 0..2 * ``--mean-len`` (mean ``--mean-len``, empty bags included), ids uniform over tables of ``--rows`` rows each,
pooled by mean; labels Bernoulli(0.25); ``--num-batches`` batches generated up front (not timed) and cycled.

* ``fused``: the trainer's stack (``build_training_stack``: the registry model sharded by DistributedModelParallel,
  table_wise, FBGEMM TBE with the fused rowwise Adagrad optimiser inside backward, ``TrainPipelineSparseDist``).
* ``plain_bag``: the same model with every EmbeddingBagCollection swapped for one ``nn.EmbeddingBag(mode=mean)`` per
  field (looked up with the KJT's values and offsets, dense gradients), one ``torch.optim.Adam`` over all parameters,
  ``clip_grad_norm_(10)``: a FuxiCTR-style step loop.

Samples/s: the median of ``--windows`` timed windows (min and max beside it); peak RSS: this process's high-water mark
after a reset before each variant (``benchmarks/common.py``). Usage::

    python benchmarks/throughput_bags.py [--batch-size 4096] [--out benchmarks/results/throughput_bags]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import sys
from typing import Any

import common
from timing import time_steps


def feature_spec(rows: int, bags: int) -> Any:
    from dlf_torchrec.data.meta import BagField, CategoricalField, FeatureSpec

    return FeatureSpec(categorical=(CategoricalField("user", rows), CategoricalField("item", rows)),
                       bags=tuple(BagField(f"bag{j + 1}", rows, f"bag{j + 1}", "mean") for j in range(bags)))


def make_batches(spec: Any, batch: int, count: int, mean_len: int, seed: int) -> list[Any]:
    """``count`` Batches: one id per single field, uniform 0..2*mean_len ids per bag (KJT values key-major)."""
    import numpy as np
    import torch
    from torchrec.datasets.utils import Batch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        lengths = [np.ones(batch, np.int64)] * len(spec.categorical) + [
            rng.integers(0, 2 * mean_len + 1, batch) for _ in spec.bags]
        sizes = [f.vocab_size for f in spec.categorical] + [b.vocab_size for b in spec.bags]
        values = [rng.integers(1, n - 1, int(lens.sum())) for lens, n in zip(lengths, sizes, strict=True)]
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=spec.sparse_names, values=torch.from_numpy(np.concatenate(values)),
            lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32)))
        out.append(Batch(dense_features=torch.zeros(batch, 0), sparse_features=kjt,
                         labels=torch.from_numpy((rng.random(batch) < 0.25).astype(np.float32))))
    return out


def plain_model(model_name: str, spec: Any, dim: int, init_std: float, model_cfg: Any) -> Any:
    """The registry model with each EmbeddingBagCollection replaced by per-field ``nn.EmbeddingBag(mode=mean)``."""
    import torch
    from torch import nn
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

    from dlf_torchrec.models.registry import build_model

    class PerFieldBags(nn.Module):
        def __init__(self, configs: list[Any]) -> None:
            super().__init__()
            self.keys = [name for cfg in configs for name in cfg.feature_names]
            self.dims = [cfg.embedding_dim for cfg in configs for _ in cfg.feature_names]
            self.tables = nn.ModuleList(nn.EmbeddingBag(cfg.num_embeddings, cfg.embedding_dim, mode="mean")
                                        for cfg in configs)
            self.table_of = [i for i, cfg in enumerate(configs) for _ in cfg.feature_names]
            for table in self.tables:
                nn.init.normal_(table.weight, std=init_std)

        def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
            per_key = features.to_dict()
            pooled = [self.tables[t](per_key[k].values(), per_key[k].offsets()[:-1])
                      for k, t in zip(self.keys, self.table_of, strict=True)]
            return KeyedTensor(keys=self.keys, length_per_key=self.dims, values=torch.cat(pooled, dim=1))

    model = build_model(model_name, spec, dim, init_std, model_cfg, device=torch.device("meta"))
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, EmbeddingBagCollection):
                setattr(module, child_name, PerFieldBags(child.embedding_bag_configs()))
    return model


def run(variant: str, args: argparse.Namespace, ctx: Any, spec: Any, batches: list[Any]) -> tuple[list[float], int]:
    import torch
    from torch import nn

    from dlf_torchrec.config import build_config
    from dlf_torchrec.training.stack import build_training_stack
    from dlf_torchrec.training.task import TrainTask

    cfg = build_config({"model": {"name": args.model}, "features": {"embedding_dim": args.dim},
                        "sharding": {"type": "table_wise"}, "training": {"batch_size": args.batch_size}})
    torch.manual_seed(0)
    data = itertools.cycle(batches)
    if variant == "fused":
        stack = build_training_stack(cfg, ctx, spec)
        stack.dmp.train()
        try:
            return time_steps(lambda: stack.pipeline.progress(data), args.warmup, args.windows, args.window_seconds, 1)
        finally:
            stack.pipeline.detach()
    task = TrainTask(plain_model(args.model, spec, args.dim, cfg.features.init_std, cfg.model))
    task.train()
    opt = torch.optim.Adam(task.parameters(), lr=cfg.optimizer.dense.lr)

    def step() -> None:
        opt.zero_grad()
        loss, _ = task(next(data))
        loss.backward()
        nn.utils.clip_grad_norm_(task.parameters(), cfg.optimizer.grad_clip_norm)
        opt.step()

    return time_steps(step, args.warmup, args.windows, args.window_seconds, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="dnn")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--bags", type=int, default=3, help="bag fields (default 3)")
    ap.add_argument("--mean-len", type=int, default=20, help="mean items per bag (default 20)")
    ap.add_argument("--rows", type=int, default=200_000, help="rows per table (default 200,000)")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--num-batches", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--window-seconds", type=float, default=5.0)
    ap.add_argument("--out", default="benchmarks/results/throughput_bags")
    args = ap.parse_args(argv)
    from dlf_torchrec.distenv import rank_env

    os.environ.update(rank_env(0, 1))

    common.quiet_torchrec()
    from dlf_torchrec.parallel import init_distributed, shutdown_distributed

    ctx = init_distributed("cpu")
    stamp = common.make_stamp(sys.argv if argv is None else ["benchmarks/throughput_bags.py", *argv])
    spec = feature_spec(args.rows, args.bags)
    rows = []
    try:
        for variant in ("fused", "plain_bag"):
            gc.collect()
            common.reset_peak_rss()
            batches = make_batches(spec, args.batch_size, args.num_batches, args.mean_len, 1)
            items = statistics.mean(float(b.sparse_features.lengths().sum()) / args.batch_size for b in batches)
            elapsed, steps = run(variant, args, ctx, spec, batches)
            rates = sorted(steps * args.batch_size / t for t in elapsed)
            rows.append({"variant": variant, "model": args.model, "batch_size": args.batch_size,
                         "ids_per_sample": round(items, 1), "samples_per_s": round(statistics.median(rates)),
                         "min": round(rates[0]), "max": round(rates[-1]), "peak_rss_mib": round(common.peak_rss_mib())})
            print(rows[-1], flush=True)
    finally:
        shutdown_distributed()
    fused = rows[0]["samples_per_s"]
    for r in rows:
        r["vs_fused"] = f"{r['samples_per_s'] / fused:.2f}x"
    os.makedirs(args.out, exist_ok=True)
    columns = list(rows[0])
    common.write_csv(os.path.join(args.out, "results.csv"), rows, columns, stamp)
    common.write_markdown(os.path.join(args.out, "results.md"),
                          "Throughput with bag fields (fused EBC vs nn.EmbeddingBag)",
                          [("Results (one process, CPU; samples/s: median window, min and max)",
                            common.markdown_table(rows, columns))], stamp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
