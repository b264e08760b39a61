"""Atomic torch.distributed.checkpoint (DCP) checkpoints of the sharded model, its optimisers and trainer state.

Layout under ``<output_dir>/checkpoints``::

    best/                 the best evaluation so far (restored for the final evaluation)
    step_00000120/        periodic checkpoints, newest K kept
    <name>.partial/       a save in progress; never read

A save writes into ``<name>.partial`` on every rank, then rank 0 adds ``trainer_state.json`` and renames the
directory into place. A crash mid-save therefore leaves the previous checkpoint untouched and loadable: a directory
without ``trainer_state.json`` or with the ``.partial`` suffix is ignored.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn

STATE_FILE = "trainer_state.json"
RNG_FILE = "rng_rank{rank}_of_{world}.pt"
PARTIAL = ".partial"


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def is_complete(path: str) -> bool:
    return not path.endswith(PARTIAL) and os.path.exists(os.path.join(path, STATE_FILE))


def save_checkpoint(path: str, model: nn.Module, optimizer: Any, trainer_state: dict[str, Any]) -> None:
    """Collective: every rank writes its shards; the checkpoint appears at ``path`` only when complete."""
    partial = path + PARTIAL
    if _is_main():
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
    _barrier()
    dcp.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, checkpoint_id=partial)
    torch.save(_rng_state(), os.path.join(partial, _rng_file()))
    _barrier()
    if _is_main():
        with open(os.path.join(partial, STATE_FILE), "w") as f:
            json.dump(trainer_state, f, indent=2)
        old = path + ".old"
        if os.path.exists(path):
            os.replace(path, old)
        os.replace(partial, path)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()


def load_checkpoint(path: str, model: nn.Module, optimizer: Any | None = None) -> dict[str, Any]:
    """Collective: restore model (and optimiser) state and this rank's RNG streams; returns the trainer state.

    DCP reshards on load, so a checkpoint written with one world size loads under another.
    """
    if not is_complete(path):
        raise FileNotFoundError(f"{path}: not a complete checkpoint (missing {STATE_FILE})")
    state: dict[str, Any] = {"model": model.state_dict()}
    if optimizer is not None:
        state["optim"] = optimizer.state_dict()
    dcp.load(state, checkpoint_id=path)
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optim"])
    rng_path = os.path.join(path, _rng_file())
    if os.path.exists(rng_path):  # absent when resharding to another world size: RNG streams are per rank
        _set_rng_state(torch.load(rng_path, weights_only=False))
    with open(os.path.join(path, STATE_FILE)) as f:
        return json.load(f)


def _rng_file() -> str:
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    return RNG_FILE.format(rank=rank, world=world)


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def periodic_checkpoints(directory: str) -> list[str]:
    """Complete periodic checkpoints, oldest first."""
    if not os.path.isdir(directory):
        return []
    names = sorted(n for n in os.listdir(directory) if n.startswith("step_") and not n.endswith((PARTIAL, ".old")))
    return [p for p in (os.path.join(directory, n) for n in names) if is_complete(p)]


def prune_checkpoints(directory: str, keep_last: int) -> None:
    if not _is_main():
        return
    for path in periodic_checkpoints(directory)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(path, ignore_errors=True)
