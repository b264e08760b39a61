"""The benchmarks' timing loop (warm-up, then timed windows of a step function, agreed across ranks) and the fp32
GEMM rate that speeds are compared with. Imports only the standard library and torch, so that the peers' venv
(``benchmarks/peers_worker.py``) measures with the same code."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any


def best_rate(fn: Callable[[], object], seconds: float, repeats: int = 3) -> float:
    """Calls per second of ``fn``: the best of ``repeats`` runs of about ``seconds`` each, after a warm-up call."""
    fn()
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < seconds:
            fn()
            n += 1
        rates.append(n / (time.perf_counter() - t0))
    return max(rates)


def gemm_gflops(m: int, k: int, n: int, seconds: float) -> float:
    """fp32 ``torch.mm`` of an [m, k] by a [k, n] matrix, GFLOP/s (2mkn FLOPs per product)."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    return 2 * m * k * n * best_rate(lambda: torch.mm(a, b, out=out), seconds) / 1e9


def time_steps(
    step: Callable[[], object], warmup_steps: int, windows: int, window_seconds: float, world_size: int
) -> tuple[list[float], int]:
    """Warm up, pick steps per window from the warm-up step time (agreed across ranks), time ``windows`` windows
    of about ``window_seconds`` each.

    Returns (elapsed seconds per window, slowest rank's; steps per window).
    """
    import torch
    import torch.distributed as dist

    def sync() -> None:
        if world_size > 1:
            dist.barrier()

    step()  # first step: lazy initialisation, pipeline fill
    sync()
    t0 = time.perf_counter()
    for _ in range(max(1, warmup_steps)):
        step()
    per_step = torch.tensor([(time.perf_counter() - t0) / max(1, warmup_steps)])
    if world_size > 1:
        dist.all_reduce(per_step, op=dist.ReduceOp.MAX)
    steps = max(1, math.ceil(window_seconds / max(float(per_step), 1e-6)))
    elapsed = []
    for _ in range(windows):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        dt = torch.tensor([time.perf_counter() - t0])
        if world_size > 1:
            dist.all_reduce(dt, op=dist.ReduceOp.MAX)
        elapsed.append(float(dt))
    return elapsed, steps


def trainer_step_rates(cfg: Any, spec: Any, batches: list[Any], windows: int, window_seconds: float) -> list[float]:
    """Samples/s per timed window of the trainer's step (``build_training_stack`` on one CPU rank of its own, the
    pipeline's ``progress``) cycling over ``batches`` held in memory."""
    import itertools

    from dlf_torchrec.parallel import init_distributed, shutdown_distributed
    from dlf_torchrec.training.stack import build_training_stack

    ctx = init_distributed("cpu")
    try:
        stack = build_training_stack(cfg, ctx, spec)
        stack.dmp.train()
        data = itertools.cycle(batches)
        try:
            elapsed, steps = time_steps(lambda: stack.pipeline.progress(data), 1, windows, window_seconds, 1)
        finally:
            stack.pipeline.detach()
    finally:
        shutdown_distributed()
    return [steps * cfg.training.batch_size / t for t in elapsed]
