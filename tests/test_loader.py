"""Data loader: Batch layout, rank partitioning (train and eval), determinism across workers, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dlf_torchrec.config import DatasetConfig
from dlf_torchrec.data.loader import make_dataloader, rank_indices
from dlf_torchrec.data.meta import DatasetMeta
from dlf_torchrec.data.preprocess import ensure_preprocessed
from dlf_torchrec.data.shards import open_split


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("loader")
    bucket = ensure_preprocessed(DatasetConfig(output_dir=str(root / "bucket"), synthetic_rows=1203,
                                               split=[0.8, 0.1, 0.1], progress=False))
    dense = ensure_preprocessed(DatasetConfig(output_dir=str(root / "dense"), synthetic_rows=1203,
                                              numeric="dense", progress=False))
    return {"bucket": bucket, "dense": dense}


def collect(loader) -> list:
    return [(b.dense_features.clone(), b.sparse_features.values().clone(), b.labels.clone()) for b in loader]


def test_batch_layout(data_dirs: dict[str, str]) -> None:
    d = data_dirs["dense"]
    meta = DatasetMeta.load(d)
    spec = DatasetMeta.load(d).feature_spec
    arr = open_split(d, "train", meta)
    loader = make_dataloader(d, "train", 64, shuffle=False)
    b = next(iter(loader))
    f = len(spec.categorical)
    assert b.dense_features.shape == (64, 13) and b.dense_features.dtype == torch.float32
    assert b.labels.shape == (64,) and b.labels.dtype == torch.float32
    kjt = b.sparse_features
    assert kjt.keys() == spec.categorical_names == [c.name for c in meta.categorical]
    assert kjt.values().dtype == torch.int64 and kjt.values().shape == (64 * f,)
    assert kjt.lengths().dtype == torch.int32 and bool((kjt.lengths() == 1).all())
    np.testing.assert_array_equal(kjt.values().numpy().reshape(f, 64), np.asarray(arr.sparse[:64]).T)  # key-major
    np.testing.assert_array_equal(b.labels.numpy(), arr.labels[:64])
    np.testing.assert_array_equal(kjt["C3"].values().numpy(), arr.sparse[:64, 2])
    nb = make_dataloader(data_dirs["bucket"], "valid", 16, shuffle=False)
    assert next(iter(nb)).dense_features.shape == (16, 0)


@pytest.mark.parametrize("world", [2, 3])
def test_train_partition_equal_and_disjoint(data_dirs: dict[str, str], world: int) -> None:
    d = data_dirs["bucket"]
    n = DatasetMeta.load(d).splits["train"].rows
    bs = 50
    per_rank = [rank_indices(n, r, world, for_eval=False, shuffle=True, seed=5, epoch=2) for r in range(world)]
    assert all(len(p) == n // world for p in per_rank)
    union = np.concatenate(per_rank)
    assert len(np.unique(union)) == len(union) and union.min() >= 0 and union.max() < n
    loaders = [make_dataloader(d, "train", bs, r, world, shuffle=True, seed=5, epoch=2) for r in range(world)]
    sizes = [[len(b[2]) for b in collect(ld)] for ld in loaders]
    assert all(s == sizes[0] for s in sizes) and len(sizes[0]) == len(loaders[0])
    labels = open_split(d, "train").labels
    got = torch.cat([b[2] for b in collect(loaders[1])]).numpy()
    np.testing.assert_array_equal(got, labels[per_rank[1]])
    # epochs reshuffle, the same (seed, epoch) repeats
    e3 = rank_indices(n, 0, world, for_eval=False, shuffle=True, seed=5, epoch=3)
    assert not np.array_equal(e3, per_rank[0])
    np.testing.assert_array_equal(per_rank[0], rank_indices(n, 0, world, for_eval=False, shuffle=True, seed=5,
                                                            epoch=2))


def test_eval_every_row_once_with_padding(data_dirs: dict[str, str]) -> None:
    d = data_dirs["bucket"]
    meta = DatasetMeta.load(d)
    n = meta.splits["valid"].rows
    assert n % 2 == 1  # odd, so rank 1 gets a padding row
    arr = open_split(d, "valid", meta)
    batches = [collect(make_dataloader(d, "valid", 16, r, 2, shuffle=True, for_eval=True)) for r in range(2)]
    assert len(batches[0]) == len(batches[1])
    assert [len(b[2]) for b in batches[0]] == [len(b[2]) for b in batches[1]]
    labels = torch.cat([b[2] for rb in batches for b in rb]).numpy()
    f = len(meta.categorical)
    sparse = np.concatenate([b[1].numpy().reshape(f, -1).T for rb in batches for b in rb])
    real = labels >= 0
    assert (~real).sum() == 2 * ((n + 1) // 2) - n == 1 and (labels[~real] == -1.0).all()
    np.testing.assert_array_equal(labels[real], arr.labels)  # every row exactly once, in order
    np.testing.assert_array_equal(sparse[real], arr.sparse)


def test_workers_keep_order_and_skip_batches(data_dirs: dict[str, str]) -> None:
    d = data_dirs["dense"]
    kw = dict(shuffle=True, seed=1, epoch=4)
    ref = collect(make_dataloader(d, "train", 37, 0, 2, **kw))
    par = collect(make_dataloader(d, "train", 37, 0, 2, num_workers=2, **kw))
    assert len(ref) == len(par) > 5
    for a, b in zip(ref, par, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)
    skip = make_dataloader(d, "train", 37, 0, 2, skip_batches=3, num_workers=2, **kw)
    assert len(skip) == len(ref) - 3
    for a, b in zip(ref[3:], collect(skip), strict=True):
        assert torch.equal(a[1], b[1])


def test_worker_loading_leaves_the_global_rng_alone(data_dirs: dict[str, str]) -> None:
    # Resume exactness depends on it: dropout masks come from the global RNG (see loader.py).
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    assert collect(make_dataloader(data_dirs["dense"], "train", 37, shuffle=True, num_workers=2))
    assert torch.equal(torch.rand(4), expected)


def test_bad_arguments(data_dirs: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="nosuch"):
        make_dataloader(data_dirs["bucket"], "nosuch", 8, shuffle=False)
    with pytest.raises(FileNotFoundError, match="preprocess"):
        make_dataloader(str(tmp_path), "train", 8, shuffle=False)
    with pytest.raises(ValueError):
        make_dataloader(data_dirs["bucket"], "train", 8, rank=2, world_size=2, shuffle=False)


def test_num_workers_auto_builds_batches_in_process_on_small_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """``training.num_workers: auto``: one worker per rank with 3+ CPU cores, in-process below (on 2 cores a worker
    process slowed the trainer, benchmarks/results/trainer_overhead/); an int is taken as given; bad values fail."""
    from dlf_torchrec.config import ConfigError, build_config
    from dlf_torchrec.data import loader

    monkeypatch.setattr(loader.os, "sched_getaffinity", lambda _: set(range(8)), raising=False)
    assert loader.resolve_num_workers("auto", 1) == 1 and loader.resolve_num_workers("auto", 2) == 1
    assert loader.resolve_num_workers("auto", 4) == 0 and loader.resolve_num_workers("auto", 8) == 0
    monkeypatch.setattr(loader.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    assert loader.resolve_num_workers("auto", 1) == 0 and loader.resolve_num_workers(2, 1) == 2
    assert build_config({}).training.num_workers == "auto"
    assert build_config({"training": {"num_workers": 0}}).training.num_workers == 0
    for bad in (-1, "two"):
        with pytest.raises(ConfigError, match="training.num_workers"):
            build_config({"training": {"num_workers": bad}})
