"""Run a function on N local gloo ranks (spawned processes) and collect each rank's JSON-able result."""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp

from dlf_torchrec.distenv import free_port, rank_env


def _entry(rank: int, fn: Callable[..., Any], world_size: int, port: int, out_dir: str, args: tuple) -> None:
    os.environ.update(rank_env(rank, world_size, port), OMP_NUM_THREADS="1")
    try:
        result = fn(*args)
        error = None
    except BaseException:  # noqa: BLE001 - reported to the parent with the traceback
        result, error = None, traceback.format_exc()
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"result": result, "error": error}, f)


def run_ranks(fn: Callable[..., Any], world_size: int, out_dir: str, *args: Any) -> list[Any]:
    """Spawn ``world_size`` processes running ``fn(*args)`` with torchrun-style env; raise on any rank's error."""
    port = free_port()
    mp.start_processes(_entry, args=(fn, world_size, port, out_dir, args), nprocs=world_size, start_method="spawn")
    results = []
    for rank in range(world_size):
        with open(os.path.join(out_dir, f"rank{rank}.json")) as f:
            payload = json.load(f)
        if payload["error"]:
            raise AssertionError(f"rank {rank} failed:\n{payload['error']}")
        results.append(payload["result"])
    return results
