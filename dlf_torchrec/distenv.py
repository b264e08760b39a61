"""The environment torchrun gives each worker, for worlds started without it: the world of one (a plain
``python -m dlf_torchrec.train``) and ranks spawned on this machine by tests and benchmarks."""

from __future__ import annotations

import socket

LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on localhost that is free right now (for ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def rank_env(rank: int = 0, world_size: int = 1, port: int | None = None) -> dict[str, str]:
    """torchrun-style variables of rank ``rank`` of a single-node world of ``world_size`` (default: the world of
    one) rendezvousing on localhost at ``port`` (default: a free one)."""
    return {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": LOCALHOST,
            "MASTER_PORT": str(free_port() if port is None else port)}
