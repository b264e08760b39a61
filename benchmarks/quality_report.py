"""The quality benchmark's tables: mean ± std over seeds per row, and the CSV / Markdown files."""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

import common
from quality_runs import RunResult
from quality_suites import CODES, Row

COLUMNS = (
    "label", "dataset", "config", "overrides", "seeds_done", "seeds", "epochs_cap", "epochs_run",
    "valid_auc_mean", "valid_auc_std", "valid_logloss_mean", "valid_logloss_std",
    "test_auc_mean", "test_auc_std", "test_logloss_mean", "test_logloss_std",
    "train_samples_per_s", "fwd_bwd_samples_per_s_b4096", "published", "status", "note",
)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(rows: list[Row], runs: list[RunResult], seeds: list[int], caps: dict[str, int],
              speeds: dict[str, Any], finish_cmd: str) -> list[dict[str, Any]]:
    """One dict per row: mean ± std over the seeds that finished, or ``pending`` with the command that finishes it."""
    out = []
    for row in rows:
        mine = [r for r in runs if r.label == row.label and r.seed in seeds]
        ok = [r for r in mine if r.status == "ok"]
        rec: dict[str, Any] = {
            "label": row.label, "dataset": row.dataset, "config": row.config, "overrides": " ".join(row.overrides),
            "seeds_done": len(ok), "seeds": " ".join(str(s) for s in seeds), "epochs_cap": caps.get(row.label),
            "epochs_run": " ".join(str(r.epochs_run) for r in sorted(ok, key=lambda r: r.seed)),
            "published": row.published(), "published_short": row.published(short=True), "note": row.note,
        }
        for split in ("valid", "test"):
            for metric in ("auc", "logloss"):
                vals = [float(getattr(r, split)[metric]) for r in ok if metric in getattr(r, split)]
                rec[f"{split}_{metric}_mean"], rec[f"{split}_{metric}_std"] = _mean_std(vals)
        sps = [r.train_samples_per_s for r in ok if r.train_samples_per_s]
        rec["train_samples_per_s"] = statistics.median(sps) if sps else None
        tp = speeds.get(row.label)
        rec["fwd_bwd_samples_per_s_b4096"] = tp if isinstance(tp, float | int) else None
        errors = [r.status for r in mine if r.status != "ok"]
        missing = [s for s in seeds if s not in {r.seed for r in mine}]
        if missing:
            status = f"pending: seeds {' '.join(map(str, missing))} not run (finish: {finish_cmd})"
        elif errors:
            status = "; ".join(errors)
        else:
            status = "ok"
        if isinstance(tp, str):
            status += f"; throughput {tp}"
        rec["status"] = status
        out.append(rec)
    return out


def _pm(mean: float | None, std: float | None, done: bool = False) -> str:
    if mean is None:
        return "-" if done else "pending"  # done: the runs finished, the split does not exist (Frappe test)
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def write_tables(suite: str, table: list[dict[str, Any]], args: argparse.Namespace, stamp: dict[str, str],
                 notes: list[str], throughput_wanted: bool) -> list[str]:
    out = args.out
    paths = [common.write_csv(os.path.join(out, f"quality_{suite}.csv"), table, COLUMNS, stamp)]
    has_test = any(r.get("test_auc_mean") is not None for r in table)
    cols = ["row", "n", "epochs run", "valid AUC", "valid logloss"]
    if has_test:
        cols += ["test AUC", "test logloss"]
    cols += ["train samples/s (bs as config)"]
    if throughput_wanted:
        cols += [f"fwd+bwd samples/s @{args.throughput_batch}"]
    cols += ["published AUC / logloss (protocol)", "status"]
    md_rows = []
    for r in table:
        m = {"row": r["label"] + (f" ({r['note']})" if r["note"] else ""), "n": f"{r['seeds_done']}/"
             f"{len(r['seeds'].split())}", "epochs run": r["epochs_run"] or "-",
             "valid AUC": _pm(r["valid_auc_mean"], r["valid_auc_std"]),
             "valid logloss": _pm(r["valid_logloss_mean"], r["valid_logloss_std"]),
             "test AUC": _pm(r["test_auc_mean"], r["test_auc_std"], r["seeds_done"] > 0),
             "test logloss": _pm(r["test_logloss_mean"], r["test_logloss_std"], r["seeds_done"] > 0),
             "train samples/s (bs as config)": f"{r['train_samples_per_s']:.0f}" if r["train_samples_per_s"] else "-",
             f"fwd+bwd samples/s @{args.throughput_batch}": f"{r['fwd_bwd_samples_per_s_b4096']:.0f}"
             if r["fwd_bwd_samples_per_s_b4096"] else "pending",
             "published AUC / logloss (protocol)": r["published_short"] or "-",
             "status": "ok" if r["status"] == "ok" else r["status"].split(" (finish")[0]}
        md_rows.append(m)
    caps = sorted({str(r["epochs_cap"]) for r in table if r["epochs_cap"] is not None})
    setup = [
        f"- budget: every row trains with its config's protocol (batch size, optimiser, early stop patience) and "
        f"`training.epochs` capped: **epoch cap {', '.join(caps) or '?'}** (`--max-epochs {args.max_epochs}`"
        + (f", heads `--max-epochs-heads {args.max_epochs_heads or 'none (config)'}`" if suite == "models" else "")
        + "); epochs run per seed in the table",
        f"- seeds: {' '.join(map(str, args.seeds))} (`training.seed`; splits as configured: Frappe uses its fixed "
        "train/validation files, the heads their configured `dataset.split_seed`); mean ± sample std over seeds",
        "- metrics: best checkpoint (monitor as configured: AUC in every shipped config) on valid, and on test where "
        "the config has a test split (the Criteo / Avazu heads' random 8:1:1 split); Frappe has no test split here "
        "(the published test split is kept aside)",
        "- train samples/s: median over epochs of the trainer's own `train_epoch` samples_per_s (batch as configured;"
        " includes data loading), median over seeds",
    ]
    if throughput_wanted:
        setup.append(
            f"- fwd+bwd samples/s @{args.throughput_batch}: measured by `quality.py` per row config: forward + "
            "backward + fused rowwise-Adagrad/Adam step, TorchRec `table_wise`, `TrainPipelineSparseDist`, 1 process, "
            "`cpu_allocator: tuned` (the trainer's default), "
            "the dataset's real cardinalities with uniform random ids, median of "
            f"{args.throughput_windows} windows of ~{args.throughput_window_seconds} s (the timing loop of "
            "`throughput.py`)")
    setup += [
        "- published numbers (docs/models.md#published-numbers) are references from other protocols (full datasets, "
        "other d / batch / epochs): not directly comparable, the protocol is named beside each; the Criteo / Avazu "
        "rows here are 10k-row head samples",
        f"- load average at start: {stamp.get('load_average_at_start')} (shared machine: samples/s are indicative)",
    ]
    legend = "\n".join(f"- {code}: {src}" for src, code in CODES.items()
                       if any(code in r["published_short"] for r in table))
    sections = [("Setup", "\n".join(setup)), ("Results", common.markdown_table(md_rows, cols)
                                             + ("\n\nPublished numbers (docs/models.md#published-numbers), "
                                                "protocols:\n\n" + legend
                                                if legend else ""))]
    if notes:
        sections.append(("Rows not run", "\n".join(f"- {n}" for n in notes)))
    pending = [r for r in table if r["status"].startswith("pending")]
    if pending:
        sections.append(("Pending", f"{len(pending)} row(s) not finished. To finish (reuses the finished runs):\n\n"
                                    f"```bash\n{finish_command(suite, args)}\n```"))
    sections.append(("Command", f"```bash\n{stamp['command']}\n```"))
    title = {"models": "Model quality: all models on Frappe, Criteo head, Avazu head",
             "dlf": "DLF on Frappe: forms and ablations vs DCNv2 / DNN",
             "tf4ctr": "TF4CTR on Frappe: DualMLP losses, SER+WSF, DLF complex encoder"}.get(suite, suite)
    if args.quick:
        title += " (--quick smoke run)"
    paths.append(common.write_markdown(os.path.join(out, f"quality_{suite}.md"), title, sections, stamp))
    return paths


def finish_command(suite: str, args: argparse.Namespace) -> str:
    parts = [".venv/bin/python benchmarks/quality.py", f"--suite {suite}", f"--max-epochs {args.max_epochs}",
             "--seeds " + " ".join(map(str, args.seeds)), "--resume"]
    if suite == "models" and args.max_epochs_heads:
        parts.append(f"--max-epochs-heads {args.max_epochs_heads}")
    if args.out != common.DEFAULT_RESULTS_DIR:
        parts.append(f"--out {args.out}")
    return " ".join(parts)
