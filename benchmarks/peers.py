"""Training speed against the peers' own code: FuxiCTR, the DLF and the TF4CTR authors' code, same batches.

Issue #17 item 3. Each model is built with the same architecture and hyper-parameters on both sides (d 16, batch
4096, no regularisers, Adam 1e-3 on the dense part, gradient norm clipped at 10) and trained on the same cached
Criteo_x4-shaped batches (39 categorical fields: C1..C26 with the Criteo Kaggle cardinalities capped at
``--max-rows-per-table``, I1..I13 as 64-bucket fields; Zipf ids, one per field and sample), each side through its
own code:

* **ours**: the trainer's step (``build_training_stack``: table-wise sharded fused tables with row-wise Adagrad,
  Adam on the over-arch, ``TrainPipelineSparseDist``), as ``benchmarks/roofline.py`` times it;
* **peer**: ``model.train_step`` of FuxiCTR 2.3.10 with its ``model_zoo`` DNN / DCNv2 (``--fuxictr-src``), of the
  DLF authors' ``models.DLF`` (``--dlf-src``, their DLF_default), or of the TF4CTR authors' ``TF4CTRv2`` (SER + WSF,
  ``--tf4ctr-src``, on the FuxiCTR 2.0.1 copy their checkout ships): ``nn.Embedding`` tables trained by Adam with
  the rest of the model (dense gradients of every table every step, FuxiCTR's design), in the reference virtualenv
  of ``benchmarks/reference.py`` (created on first use; ``benchmarks/peers_worker.py`` runs there).

Every measurement is a fresh process (``torch.get_num_threads()`` threads, the default) under a wrapper that reports
its peak RSS; sides and models alternate within each repeat, and the median of ``--repeats`` is kept. Each process
measures the square fp32 GEMM rate just before its step, so each side's achieved GFLOP/s (our FLOP count per
sample, the same architecture on both sides, ``FlopCounterMode``: matmuls only) is given as a share of the peak
measured next to it.

    python benchmarks/peers.py --fuxictr-src /path/to/FuxiCTR --dlf-src /path/to/DLF --tf4ctr-src /path/to/TF4CTR
    # ~27 min on 2 cores
    python benchmarks/peers.py ... --models dcnv2 --max-rows-per-table 40000 1000000 0  # ratio vs table size

Outputs in ``--out`` (default ``benchmarks/results/peers``): ``peers.csv`` and ``peers.md`` (stamped; a row per
model and table size: both sides' samples/s, the ratio, each side's share of the GEMM peak, peak RSS) and
``peers.png`` (the ratio per model, and against total table rows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
import reference  # noqa: E402

from dlf_torchrec import cli  # noqa: E402

NUMERIC_BUCKETS = 64
PEER_COMMON = dict(loss="binary_crossentropy", metrics=["AUC", "logloss"], task="binary_classification",
                   optimizer="adam", learning_rate=1.0e-3, embedding_regularizer=0, net_regularizer=0,
                   embedding_dim=16, batch_size=4096, max_gradient_norm=10.0, monitor="AUC", monitor_mode="max",
                   early_stop_patience=2, save_best_only=True, eval_steps=None, reduce_lr_on_plateau=True,
                   group_id=None, use_features=None, feature_specs=None)
# model -> (our config's model section, peer class, peer source, model_zoo dir, peer hyper-parameters): the same
# architecture on both sides (our defaults = the peers' Criteo settings; see the module docstring).
MODELS: dict[str, tuple[dict[str, Any], str, str, str, dict[str, Any]]] = {
    "dnn": ({"name": "dnn", "hidden_units": [400, 400, 400], "batch_norm": True, "dropout": 0.0},
            "DNN", "fuxictr", os.path.join("model_zoo", "DNN", "DNN_torch"),
            dict(hidden_units=[400, 400, 400], hidden_activations="relu", net_dropout=0, batch_norm=True)),
    "dcnv2": ({"name": "dcnv2", "structure": "parallel", "num_cross_layers": 3, "hidden_units": [400, 400, 400],
               "batch_norm": True, "dropout": 0.0},
              "DCNv2", "fuxictr", os.path.join("model_zoo", "DCNv2"),
              dict(model_structure="parallel", use_low_rank_mixture=False, low_rank=32, num_experts=4,
                   stacked_dnn_hidden_units=[400, 400, 400], parallel_dnn_hidden_units=[400, 400, 400],
                   dnn_activations="relu", num_cross_layers=3, net_dropout=0, batch_norm=True)),
    "tf4ctr": ({"name": "tf4ctr", "ssem": "ser", "dfm": "wsf", "simple_hidden_units": [400, 400],
                "complex_hidden_units": [400, 400, 400], "batch_norm": True, "dropout": 0.0, "loss": "twin_focus",
                "alpha": 0.25, "c": 0.8, "gamma": 2.0},
               "TF4CTRv2", "tf4ctr", "",
               dict(SSM="SER", DFM="WSF", easy_hidden_units=[400, 400], hard_hidden_units=[400, 400, 400],
                    hidden_activations="relu", net_dropout=0, batch_norm=True, alpha=0.25, c=0.8, gamma=2)),
    "dlf": ({"name": "dlf", "form": "authors", "num_layers": 3, "rank": 24, "num_tokens_high": 32,
             "num_tokens_low": 32, "num_tokens_implicit": 32, "block_hidden": 512, "dropout": 0.0},
            "DLF", "dlf", "", dict(reference.MODELS["dlf"]["params"])),
}
PEER_NAMES = {"fuxictr": "FuxiCTR {}", "dlf": "DLF authors' code", "tf4ctr": "TF4CTR authors' {}"}
COLUMNS = ("model", "max_rows_per_table", "table_rows", "ours_samples_per_s", "peer", "peer_samples_per_s",
           "ours_over_peer", "ours_pct_of_peak", "peer_pct_of_peak", "mflop_per_sample", "ours_runs", "peer_runs",
           "ours_peak_rss_mib", "peer_peak_rss_mib", "ours_parameters", "peer_parameters", "status")



def vocab_sizes(max_rows_per_table: int) -> tuple[list[str], list[int]]:
    """(field names, table rows incl. PAD and OOV): I1..I13 with NUMERIC_BUCKETS buckets, C1..C26 capped."""
    from batches import cardinalities

    names = [f"I{i + 1}" for i in range(13)] + [f"C{i + 1}" for i in range(26)]
    return names, [NUMERIC_BUCKETS + 2] * 13 + cardinalities(max_rows_per_table)


def write_batches(path: str, max_rows_per_table: int, batch: int, count: int, seed: int) -> int:
    """Zipf ids (``benchmarks/batches.py``'s rule) for every field, ``count`` batches, to ``path`` (npz); returns
    the total table rows."""
    import numpy as np

    names, vocab = vocab_sizes(max_rows_per_table)
    rng = np.random.default_rng(seed)
    ids = np.empty((count, len(names), batch), dtype=np.int64)
    for k in range(count):
        for j, v in enumerate(vocab):
            span = v - 2  # ids 1 .. v - 2 (0 = PAD, v - 1 = OOV)
            rank = (rng.zipf(1.1, size=batch) - 1) % span
            ids[k, j] = (rank * 2654435761) % span + 1
    labels = (rng.random((count, batch)) < 0.25).astype(np.float32)
    np.savez(path, ids=ids, labels=labels, names=np.array(names), vocab=np.array(vocab))
    return sum(vocab)


# ----------------------------------------------------------------------------------------------- our side


def run_ours(model: str, data: str, windows: int, window_seconds: float) -> dict[str, Any]:
    """Our trainer's step on the cached batches; {"samples_per_s": [...], "square_peak_gflops", "mflop"}."""
    from dlf_torchrec.distenv import rank_env

    os.environ.update(rank_env(0, 1))
    common.quiet_torchrec()
    import numpy as np
    import torch
    from batches import one_id_per_field
    from roofline import linear_shapes_and_flops
    from timing import gemm_gflops, trainer_step_rates
    from torchrec.datasets.utils import Batch

    from dlf_torchrec.config import build_config
    from dlf_torchrec.data.meta import CategoricalField, FeatureSpec
    from dlf_torchrec.training.allocator import configure_cpu_allocator
    from dlf_torchrec.training.stack import build_task

    configure_cpu_allocator("tuned")  # as the trainer does
    arrays = np.load(data)
    ids, labels = arrays["ids"], arrays["labels"]
    spec = FeatureSpec(categorical=tuple(CategoricalField(str(n), int(v))
                                         for n, v in zip(arrays["names"], arrays["vocab"], strict=True)), dense=())
    batch = ids.shape[2]
    cfg = build_config({"model": MODELS[model][0], "features": {"embedding_dim": PEER_COMMON["embedding_dim"]},
                        "sharding": {"type": "table_wise"}, "training": {"batch_size": batch}})
    batches = [Batch(dense_features=torch.zeros(batch, 0), sparse_features=one_id_per_field(spec, torch.from_numpy(
        ids[k])), labels=torch.from_numpy(labels[k])) for k in range(ids.shape[0])]
    torch.manual_seed(2019)
    counted = batches[0]
    net = build_task(cfg, spec).model.train()
    parameters = sum(p.numel() for p in net.parameters())
    _, mflop, _ = linear_shapes_and_flops(net, counted, batch)
    del net
    peak = gemm_gflops(2048, 2048, 2048, 0.5)
    return {"samples_per_s": trainer_step_rates(cfg, spec, batches, windows, window_seconds),
            "square_peak_gflops": peak, "mflop": mflop, "parameters": parameters}


# ------------------------------------------------------------------------------------------------ driver


def measure(argv: list[str], timeout: float) -> dict[str, Any]:
    res = common.run_measured(argv, timeout, "samples_per_s")
    return {**res, "rate": statistics.median(res["samples_per_s"])} if res["status"] == "ok" else res


def peer_argv(py: str, model: str, data: str, a: argparse.Namespace) -> list[str]:
    _, cls, source, zoo, params = MODELS[model]
    return [py, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers_worker.py"), "--model", model,
            "--model-class", cls, "--source", source, "--zoo-dir", zoo,
            "--params", json.dumps({**PEER_COMMON, **params}), "--data", data,
            "--fuxictr-src", a.fuxictr_src or "", "--dlf-src", a.dlf_src or "", "--tf4ctr-src", a.tf4ctr_src or "",
            "--windows", str(a.windows), "--window-seconds", str(a.window_seconds)]


def ours_argv(model: str, data: str, a: argparse.Namespace) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), "--ours-worker", model, "--data", data,
            "--windows", str(a.windows), "--window-seconds", str(a.window_seconds)]


def summarise(model: str, cap: int, table_rows: int, ours: list[dict], peer: list[dict]) -> dict[str, Any]:
    row: dict[str, Any] = {"model": model, "max_rows_per_table": cap or "none (full)", "table_rows": table_rows,
                           "peer": PEER_NAMES[MODELS[model][2]].format(MODELS[model][1])}
    ok_o = [r for r in ours if r["status"] == "ok"]
    ok_p = [r for r in peer if r["status"] == "ok"]
    if not ok_o or not ok_p:
        row["status"] = "; ".join(r["status"] for r in ours + peer if r["status"] != "ok")
        return row
    o = statistics.median(r["rate"] for r in ok_o)
    p = statistics.median(r["rate"] for r in ok_p)
    mflop = ok_o[0]["mflop"]
    row.update(ours_samples_per_s=round(o), peer_samples_per_s=round(p), ours_over_peer=round(o / p, 2),
               ours_pct_of_peak=round(100 * statistics.median(r["rate"] * mflop / 1e3 / r["square_peak_gflops"]
                                                                for r in ok_o), 1),
               peer_pct_of_peak=round(100 * statistics.median(r["rate"] * mflop / 1e3 / r["square_peak_gflops"]
                                                                for r in ok_p), 1),
               mflop_per_sample=round(mflop, 2), ours_runs=" / ".join(f"{r['rate']:,.0f}" for r in ok_o),
               peer_runs=" / ".join(f"{r['rate']:,.0f}" for r in ok_p),
               ours_peak_rss_mib=round(max(r["peak_rss_mib"] for r in ok_o)),
               peer_peak_rss_mib=round(max(r["peak_rss_mib"] for r in ok_p)), ours_parameters=ok_o[0]["parameters"],
               peer_parameters=ok_p[0]["parameters"], status="ok")
    return row


def plot(rows: list[dict[str, Any]], path: str, stamp: dict[str, str]) -> None:
    fig, (ax1, ax2) = common.new_figure(11.0, 4.6, ncols=2)
    ok = [r for r in rows if r.get("status") == "ok"]
    smallest = min((r["table_rows"] for r in ok), default=0)
    first = [r for r in ok if r["table_rows"] == smallest]
    ax1.bar([f"{r['model']}\nvs " + "\n".join(textwrap.wrap(r["peer"], 16)) for r in first],
            [r["ours_over_peer"] for r in first])
    ax1.axhline(1.0, color="grey", linestyle="--")
    ax1.set_ylabel(f"ours / peer samples/s ({smallest:,} table rows)")
    ax1.tick_params(axis="x", labelsize=7)
    for model in dict.fromkeys(r["model"] for r in ok):
        pts = sorted((r["table_rows"], r["ours_over_peer"]) for r in ok if r["model"] == model)
        ax2.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=model)
    ax2.set_xscale("log")
    ax2.set_xlabel("total embedding table rows")
    ax2.set_ylabel("ours / peer samples/s")
    ax2.legend(fontsize=8)
    common.save_figure(fig, path, stamp)


def main(argv: list[str] | None = None) -> int:
    ap = cli.ArgumentParser("peers", description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--fuxictr-src", default=None, help="checkout of reczoo/FuxiCTR (its model_zoo)")
    ap.add_argument("--dlf-src", default=None, help="checkout of Keffee/DLF")
    ap.add_argument("--tf4ctr-src", default=None, help="checkout of salmon1802/TF4CTR")
    ap.add_argument("--max-rows-per-table", nargs="+", type=int, default=[100_000, 1_000_000, 0],
                    help="caps on the Criteo tables (0 = the full 33.8M rows)")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--num-batches", type=int, default=4)
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--window-seconds", type=float, default=6.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--venv", default=reference.DEFAULT_VENV, help="the FuxiCTR venv, created on first use")
    ap.add_argument("--timeout", type=float, default=1200.0)
    ap.add_argument("--out", default=os.path.join(common.REPO_ROOT, "benchmarks", "results", "peers"))
    ap.add_argument("--ours-worker", choices=list(MODELS), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ours_worker:
        print(json.dumps(run_ours(args.ours_worker, args.data, args.windows, args.window_seconds)))
        return 0
    return cli.run("peers", lambda: _bench(args), args.debug)


def _bench(a: argparse.Namespace) -> int:
    for model in a.models:
        source = MODELS[model][2]
        if not getattr(a, f"{source}_src"):
            raise ValueError(f"{model}: needs --{source}-src")
    stamp = common.make_stamp()
    py = reference.ensure_venv(a.venv)
    stamp.update({f"venv_{k}": v for k, v in reference.venv_versions(py).items() if k in ("fuxictr", "torch")})
    for flag, src in (("fuxictr_commit", a.fuxictr_src), ("dlf_commit", a.dlf_src), ("tf4ctr_commit", a.tf4ctr_src)):
        if src:
            stamp[flag] = subprocess.run(["git", "-C", src, "rev-parse", "HEAD"], capture_output=True,
                                         text=True).stdout.strip() or "unknown"
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for cap in a.max_rows_per_table:
            data = os.path.join(work, f"batches_{cap}.npz")
            table_rows = write_batches(data, cap, a.batch_size, a.num_batches, 2019)
            results: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for rep in range(a.repeats):
                for model in a.models:
                    sides = (("ours", ours_argv(model, data, a)), ("peer", peer_argv(py, model, data, a)))
                    for side, argv in sides if rep % 2 == 0 else sides[::-1]:  # who goes first alternates
                        res = measure(argv, a.timeout)
                        results.setdefault((model, side), []).append(res)
                        rate = f"{res['rate']:,.0f} samples/s" if res["status"] == "ok" else res["status"]
                        print(f"  {table_rows:,} rows, repeat {rep}, {model} {side}: {rate}", flush=True)
            rows += [summarise(m, cap, table_rows, results[(m, "ours")], results[(m, "peer")]) for m in a.models]
    setup = (f"batch {a.batch_size}, d {PEER_COMMON['embedding_dim']}, {a.num_batches} cached batches, "
             f"{a.repeats} alternating repeats of {a.windows} windows x {a.window_seconds:g} s per side; "
             f"`*_pct_of_peak`: our FLOP count x samples/s over the square fp32 GEMM rate (2048^3) measured in the "
             "same process just before the step.")
    common.write_report(a.out, "peers", "Training speed: ours vs the peers' own code", __doc__ or "", setup, rows,
                        COLUMNS, stamp, "benchmarks/peers.py")
    plot(rows, os.path.join(a.out, "peers.png"), stamp)
    print(common.markdown_table(rows, COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
