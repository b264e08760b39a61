"""The quality benchmark's throughput column: forward + backward + optimiser samples/s of each row's exact model
config, timed in a fresh subprocess (``python benchmarks/quality_throughput.py SPEC OUT``) with the trainer's own
training stack and the throughput benchmark's timing loop (:func:`timing.time_steps`)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
from batches import random_batch  # noqa: E402
from quality_suites import Row  # noqa: E402
from timing import time_steps  # noqa: E402

NUM_BATCHES = 4  # distinct random batches, cycled


def time_jobs(spec_path: str, out_path: str) -> int:
    """Subprocess entry: time fwd+bwd+optimiser at the given batch for each (label, config, overrides).

    Writes ``{label: {"samples_per_s", "peak_rss_mib", "minor_faults_per_step"} or {"error": message}}``.
    """
    from dlf_torchrec.distenv import rank_env

    os.environ.update(rank_env())  # a world of one of its own, even when started from a torchrun worker
    import resource

    with open(spec_path) as f:
        spec = json.load(f)
    from dlf_torchrec.training.allocator import configure_cpu_allocator

    # Before torch allocates anything, as the trainer does (training.cpu_allocator).
    configure_cpu_allocator(spec.get("cpu_allocator", "tuned"))

    import torch

    from dlf_torchrec.config import load_config
    from dlf_torchrec.data.meta import DatasetMeta
    from dlf_torchrec.data.preprocess import ensure_preprocessed
    from dlf_torchrec.parallel import init_distributed, shutdown_distributed
    from dlf_torchrec.training.stack import build_training_stack

    common.quiet_torchrec()
    batch_size = int(spec["batch_size"])
    windows, window_seconds = int(spec["windows"]), float(spec["window_seconds"])
    ctx = init_distributed("cpu")
    results: dict[str, Any] = {}
    try:
        for job in spec["jobs"]:
            try:
                cfg = load_config(os.path.join(common.REPO_ROOT, job["config"]),
                                  [*job["overrides"], f"training.batch_size={batch_size}", "dataset.progress=false",
                                   "sharding.type=table_wise"])
                ensure_preprocessed(cfg.dataset)
                meta = DatasetMeta.load(cfg.dataset.output_dir)
                fspec = meta.feature_spec
                gen = torch.Generator().manual_seed(2019)
                batches = [random_batch(fspec, batch_size, gen) for _ in range(NUM_BATCHES)]
                torch.manual_seed(2019)
                stack = build_training_stack(cfg, ctx, fspec)
                dmp, pipeline = stack.dmp, stack.pipeline
                dmp.train()
                cycle = iter(batches * 10_000)
                common.reset_peak_rss()
                steps_done = [0]

                def step(p: Any = pipeline, c: Any = cycle, n: list[int] = steps_done) -> None:
                    p.progress(c)
                    n[0] += 1

                faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                try:
                    elapsed, steps = time_steps(step, 1, windows, window_seconds, 1)
                finally:
                    pipeline.detach()
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
                results[job["label"]] = {
                    "samples_per_s": batch_size * steps / statistics.median(elapsed),
                    "peak_rss_mib": round(common.peak_rss_mib(), 1),
                    "minor_faults_per_step": round(faults / max(1, steps_done[0])),
                }
                print(f"{job['label']}: {results[job['label']]['samples_per_s']:.0f} samples/s", flush=True)
            except Exception as e:  # noqa: BLE001 - one failing row must not lose the others
                results[job["label"]] = {"error": f"{type(e).__name__}: {e}"}
                print(f"{job['label']}: error: {type(e).__name__}: {e}", flush=True)
            with open(out_path, "w") as f:
                json.dump(results, f)
    finally:
        shutdown_distributed()
    return 0


def run_throughput_jobs(jobs: list[dict[str, Any]], batch_size: int, windows: int, window_seconds: float,
                        cpu_allocator: str, timeout: float, work_dir: str) -> dict[str, dict[str, Any]]:
    """Run :func:`time_jobs` in a fresh subprocess over ``jobs`` ({label, config, overrides}).

    Returns its per-label dicts; labels it did not reach (timeout, crash) are missing.
    """
    if not jobs:
        return {}
    spec_path = os.path.join(work_dir, "throughput_jobs.json")
    out_path = os.path.join(work_dir, "throughput_results.json")
    with open(spec_path, "w") as f:
        json.dump({"batch_size": batch_size, "windows": windows, "window_seconds": window_seconds,
                   "cpu_allocator": cpu_allocator, "jobs": jobs}, f)
    if os.path.exists(out_path):
        os.remove(out_path)
    try:
        subprocess.run([sys.executable, os.path.abspath(__file__), spec_path, out_path],
                       cwd=common.REPO_ROOT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        pass
    if not os.path.exists(out_path):
        return {}
    with open(out_path) as f:
        return json.load(f)


def measure_throughput(rows: list[Row], args: argparse.Namespace, work_dir: str) -> dict[str, Any]:
    """The batch-4096 column for the rows that want it: {label: samples/s or "error: ..."}."""
    jobs = [{"label": r.label, "config": r.config, "overrides": list(r.overrides)} for r in rows if r.throughput]
    if jobs:
        print(f"throughput at batch {args.throughput_batch}: {len(jobs)} model configs ...", flush=True)
    raw = run_throughput_jobs(jobs, args.throughput_batch, args.throughput_windows, args.throughput_window_seconds,
                              "tuned", args.timeout, work_dir)
    return {label: r["samples_per_s"] if "samples_per_s" in r else f"error: {r['error']}"
            for label, r in raw.items()}


if __name__ == "__main__":
    sys.exit(time_jobs(*sys.argv[1:3]))
