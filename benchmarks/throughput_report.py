"""Throughput results: one row per job, ratios, the comparison table, plots and the CSV / Markdown files."""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict
from typing import Any

import common
from batches import cardinalities
from throughput_worker import Job, Settings

COLUMNS = (
    "variant", "model", "sharding", "world_size", "batch_size", "batch_per_rank", "samples_per_s",
    "samples_per_s_min", "samples_per_s_max", "windows", "steps_per_window", "ratio_fused_vs_plain_dense",
    "peak_rss_mib", "peak_rss_mib_per_rank", "step_loop", "table_rows", "embedding_dim", "status",
)



def summarise(job: Job, per_rank: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """One CSV row from the ranks' results of one job."""
    errors = [r["error"] for r in per_rank if r.get("error")]
    row: dict[str, Any] = {
        **asdict(job),
        "batch_per_rank": job.batch_size // job.world_size,
        "windows": settings.windows,
        "step_loop": "TrainPipelineSparseDist" if job.variant == "fused" else "plain loop",
        "table_rows": sum(cardinalities(settings.max_rows_per_table)),
        "embedding_dim": settings.embedding_dim,
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in per_rank), 1),
        "peak_rss_mib_per_rank": ";".join(f"{r['peak_rss_mib']:.1f}" for r in per_rank),
        "samples_per_s": None, "samples_per_s_min": None, "samples_per_s_max": None,
        "steps_per_window": per_rank[0]["steps_per_window"], "ratio_fused_vs_plain_dense": None,
    }
    if errors or not per_rank[0]["elapsed"]:
        last = (errors[0] if errors else "no result").strip().splitlines()[-1]
        row["status"] = f"error: {last}"[:200]
        return row
    rates = [job.batch_size * row["steps_per_window"] / e for e in per_rank[0]["elapsed"]]
    row.update(samples_per_s=round(statistics.median(rates), 1), samples_per_s_min=round(min(rates), 1),
               samples_per_s_max=round(max(rates), 1),
               status="ok" if all(r["rss_reset"] for r in per_rank) else "ok (rss = process peak)")
    return row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """ratio_fused_vs_plain_dense on every fused row: its samples/s over plain_dense's at the same model and batch."""
    plain = {(r["model"], r["batch_size"]): r["samples_per_s"] for r in rows
             if r["variant"] == "plain_dense" and r.get("samples_per_s")}
    for r in rows:
        base = plain.get((r["model"], r["batch_size"]))
        if r["variant"] == "fused" and r.get("samples_per_s") and base:
            r["ratio_fused_vs_plain_dense"] = round(r["samples_per_s"] / base, 2)


def comparison_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and batch: the best 1-process fused sharding vs the plain paths."""
    out = []
    for model, batch in sorted({(r["model"], r["batch_size"]) for r in rows}):
        sel = [r for r in rows if r["model"] == model and r["batch_size"] == batch and r.get("samples_per_s")]
        fused = {r["sharding"]: r["samples_per_s"] for r in sel if r["variant"] == "fused" and r["world_size"] == 1}
        plain = {r["variant"]: r["samples_per_s"] for r in sel if r["variant"] != "fused"}
        tw = fused.get("table_wise")
        best = max(fused.items(), key=lambda kv: kv[1]) if fused else None
        dense, sparse = plain.get("plain_dense"), plain.get("plain_sparse")
        out.append({
            "model": model, "batch_size": batch,
            "fused_table_wise_w1": tw,
            "fused_best_w1": f"{best[1]:.0f} ({best[0]})" if best else None,
            "plain_dense": dense, "plain_sparse": sparse,
            "fused_tw / plain_dense": round(tw / dense, 2) if tw and dense else None,
            "fused_tw / plain_sparse": round(tw / sparse, 2) if tw and sparse else None,
        })
    return out


def plot_bars(rows: list[dict[str, Any]], path: str, stamp: dict[str, str]) -> None:
    """Grouped bars: one group per model, one bar per variant/sharding/world (largest batch size only)."""
    batch = max(r["batch_size"] for r in rows)
    sel = [r for r in rows if r["batch_size"] == batch]
    models = sorted({r["model"] for r in sel})
    labels = sorted({_label(r) for r in sel}, key=_label_order)
    fig, ax = common.new_figure(max(10.0, 1.2 * len(models) * max(1, len(labels)) / 3), 6.0)
    width = 0.8 / max(1, len(labels))
    cmap = __import__("matplotlib").colormaps["tab20"]
    for j, label in enumerate(labels):
        xs, ys = [], []
        for i, model in enumerate(models):
            value = next((r["samples_per_s"] for r in sel if r["model"] == model and _label(r) == label), None)
            xs.append(i - 0.4 + (j + 0.5) * width)
            ys.append(value or 0.0)
        ax.bar(xs, ys, width=width, label=label, color=cmap(j % 20))
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("training samples/s (global, median window)")
    ax.set_title(f"Training throughput, global batch {batch}, Criteo-shaped synthetic data")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    common.save_figure(fig, path, stamp)


def _label(r: dict[str, Any]) -> str:
    if r["variant"] == "fused":
        return f"fused {r['sharding']} w{r['world_size']}"
    return f"{r['variant']} (nn.Embedding) w1"


def _label_order(label: str) -> tuple[int, str]:
    return (0 if label.startswith("fused") else 1, label)


def plot_scaling(rows: list[dict[str, Any]], path: str, stamp: dict[str, str]) -> None:
    """Samples/s vs world size (or vs batch size when only one world size ran): one panel per model."""
    worlds = sorted({r["world_size"] for r in rows if r["variant"] == "fused"})
    by_world = len(worlds) > 1
    models = sorted({r["model"] for r in rows})
    fig, axes = common.new_figure(max(6.0, 4.0 * len(models)), 4.8, ncols=len(models))
    axes = axes if isinstance(axes, list) else [axes]
    batch = max(r["batch_size"] for r in rows)
    for ax, model in zip(axes, models, strict=True):
        sel = [r for r in rows if r["model"] == model and r["samples_per_s"]]
        for series in sorted({_series(r, by_world) for r in sel}):
            pts = sorted((r["world_size"] if by_world else r["batch_size"], r["samples_per_s"]) for r in sel
                         if _series(r, by_world) == series and (not by_world or r["batch_size"] == batch))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=series,
                        linestyle="--" if series.startswith("plain") else "-")
        ax.set_title(model)
        ax.set_xlabel("world size (gloo ranks)" if by_world else "global batch size")
        if by_world:
            ax.set_xticks(worlds)
        else:
            ax.set_xscale("log", base=2)
        ax.set_ylabel("samples/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"Throughput scaling ({'batch ' + str(batch) if by_world else 'world size 1 fused + plain'})")
    common.save_figure(fig, path, stamp)


def _series(r: dict[str, Any], by_world: bool) -> str:
    if r["variant"] == "fused":
        return f"fused {r['sharding']}" + ("" if by_world else f" w{r['world_size']}")
    return f"{r['variant']} (w1)"


def write_results(rows: list[dict[str, Any]], out: str, settings: Settings, stamp: dict[str, str],
                  total_s: float) -> list[str]:
    """throughput.csv / .md / .png / _scaling.png under ``out``."""
    os.makedirs(out, exist_ok=True)
    paths = [common.write_csv(os.path.join(out, "throughput.csv"), rows, COLUMNS, stamp)]
    table_cols = ["variant", "model", "sharding", "world_size", "batch_size", "samples_per_s", "samples_per_s_min",
                  "samples_per_s_max", "ratio_fused_vs_plain_dense", "peak_rss_mib", "peak_rss_mib_per_rank",
                  "status"]
    comp = comparison_rows(rows)
    comp_cols = list(comp[0]) if comp else []
    cap = f"{settings.max_rows_per_table:,}" if settings.max_rows_per_table else "no"
    total_rows = sum(cardinalities(settings.max_rows_per_table))
    setup = (
        f"- data: 13 dense + 26 categorical Criteo Kaggle fields, tables capped at {cap} rows ({total_rows:,} rows "
        f"in all), embedding dim "
        f"{settings.embedding_dim}, Zipf({settings.zipf}) ids, {settings.num_batches} distinct batches per rank\n"
        f"- timing: 1 + {settings.warmup_steps} warm-up steps, then {settings.windows} windows of ~"
        f"{settings.window_seconds} s; samples/s = global batch x steps / window time, median (min, max beside)\n"
        "- fused: shard_model (forced sharding type, FBGEMM TBE + fused EXACT_ROWWISE_ADAGRAD) + Adam on dense "
        "params, TrainPipelineSparseDist; world 2 = 2 spawned gloo processes on the same machine, each with "
        "cores/2 threads\n"
        "- plain_dense: same model with one torch.nn.Embedding per field (dense grads), one Adam on all params, "
        "clip_grad_norm_ 10, plain loop, 1 process (FuxiCTR style)\n"
        "- plain_sparse (extra): nn.Embedding(sparse=True) + SparseAdam on tables, Adam on the rest\n"
        f"- glibc malloc: `{settings.cpu_allocator}` in every process (training.cpu_allocator)\n"
        f"- whole run: {total_s:.0f} s; load average at start: {stamp.get('load_average_at_start')}"
    )
    sections = [
        ("Setup", setup),
        ("Fused (TorchRec) vs per-field nn.Embedding, 1 process", common.markdown_table(comp, comp_cols)
         if comp else "(no results)"),
        ("All configurations", common.markdown_table(rows, table_cols)),
    ]
    paths.append(common.write_markdown(os.path.join(out, "throughput.md"), "Training throughput", sections, stamp))
    ok = [r for r in rows if r.get("samples_per_s")]
    if ok:
        paths.append(os.path.join(out, "throughput.png"))
        plot_bars(ok, paths[-1], stamp)
        paths.append(os.path.join(out, "throughput_scaling.png"))
        plot_scaling(ok, paths[-1], stamp)
    return paths


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ["variant", "model", "sharding", "world_size", "batch_size", "samples_per_s", "ratio_fused_vs_plain_dense",
            "peak_rss_mib", "status"]
    widths = [max(len(c), *(len(common.fmt(r.get(c)) if r.get(c) is not None else "") for r in rows))
              for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        cells = [common.fmt(r.get(c)) if r.get(c) is not None else "" for c in cols]
        print("  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)))
