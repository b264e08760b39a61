"""Model quality: the trainer CLI over configs x seeds, mean ± std of valid/test AUC and logloss, published beside.

Each row of a suite is ``(label, dataset, config file, overrides)``; each row runs once per seed as a subprocess::

    python -m dlf_torchrec.train --config <config> <overrides> training.seed=<seed> \
        training.epochs=min(<configured>, <cap>) training.output_dir=<work-dir>/<label>/seed<seed>

Everything else (dataset, split files / ``dataset.split_seed``, batch size, optimiser, early stopping) stays as the
config has it, so every row of a suite follows the configs' protocol (Frappe: configs/frappe/base.yaml, the BARS
protocol: early stop patience 2 on valid AUC) under the same epoch cap. Per run, ``results.json`` (best
checkpoint's valid and, where the config has a test split, test metrics) and the median ``samples_per_s`` of the
``train_epoch`` events of ``metrics.jsonl`` are collected; per row the mean ± std (sample std, n - 1)
over seeds is reported.

Suites (``--suite``):

* ``models``: dnn, dcnv2, dlf, tf4ctr on Frappe, the Criteo head sample and the Avazu head sample (no Avazu tf4ctr
  config exists: that row is skipped and listed as such).
* ``dlf``: Frappe; DCNv2, DNN, DLF ``form: authors`` and ``form: paper``, each form full + w/o gate, w/o RLI,
  w/o NAF, w/o RLI+NAF. "Full" for the authors' form is ``naf: true`` (the authors' default model has no attention).
* ``tf4ctr``: Frappe; DualMLP BCE, DualMLP Twin Focus, TF4CTR SER+WSF, TF4CTR with DLF (authors' form) as the complex
  encoder, DCNv2 for reference.

Throughput column (``dlf`` and ``tf4ctr`` suites): forward + backward + optimiser samples/s at batch 4096 of each
row's exact model config, measured here (the throughput benchmark's timing loop, ``throughput._time_steps``) on
the row's dataset feature spec (real Frappe cardinalities) with uniform random ids: TorchRec ``shard_model`` forced to
``table_wise``, fused rowwise Adagrad + Adam, ``TrainPipelineSparseDist``, 1 process, glibc malloc tuned as the
trainer does by default (``training.cpu_allocator``). ``benchmarks/throughput.py``
cannot do this: it builds every model with its default config, so DLF forms and ablations would all look alike.

Outputs in ``--out`` (default ``benchmarks/results``): ``quality_<suite>.csv`` / ``.md`` (aggregated rows, rows not
yet run marked ``pending``) and ``quality_<suite>_runs.jsonl`` (one line per finished run; ``--resume`` reuses it).
The tables are rewritten after every run, so a suite cut short still leaves its finished rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402

from dlf_torchrec import cli  # noqa: E402

SUITES = ("models", "dlf", "tf4ctr")
DEFAULT_SEEDS = {"models": [2019, 2020, 2021], "dlf": [2019], "tf4ctr": [2019]}
THROUGHPUT_SUITES = ("dlf", "tf4ctr")
COLUMNS = (
    "label", "dataset", "config", "overrides", "seeds_done", "seeds", "epochs_cap", "epochs_run",
    "valid_auc_mean", "valid_auc_std", "valid_logloss_mean", "valid_logloss_std",
    "test_auc_mean", "test_auc_std", "test_logloss_mean", "test_logloss_std",
    "train_samples_per_s", "fwd_bwd_samples_per_s_b4096", "published", "status", "note",
)
QUICK_OVERRIDES = ("dataset.synthetic_rows=3000", "training.epochs=1", "model.hidden_units=[16]",
                   "model.num_cross_layers=1", "training.batch_size=512")

# Published numbers, docs/models.md#published-numbers: (source + protocol, AUC, logloss or None).
DLF_PAPER = "DLF paper (d=64, batch 10k, 5-run mean, full data)"
BARS_X1 = "BARS x1 leaderboard (tuned, d=10, full data)"
BARS_X4 = "BARS x4_001 (d=16, full data)"
TF4CTR_PAPER = "TF4CTR paper (d=16, full data; AUC only)"
TF4CTR_T2 = "TF4CTR paper Table II (d=16, full data; AUC only)"
DLF_ABLATION = "DLF paper Table 3, Criteo / Avazu AUC only (no Frappe ablation published)"
Ref = tuple[str, float, float | None]
PUBLISHED: dict[tuple[str, str], list[Ref]] = {
    ("frappe", "dnn"): [(BARS_X1, 0.9833, 0.1622)],
    ("frappe", "dcnv2"): [(DLF_PAPER, 0.9717, 0.2137), (BARS_X1, 0.9845, 0.1491), (TF4CTR_PAPER, 0.9845, None)],
    ("frappe", "dlf"): [(DLF_PAPER, 0.9812, 0.1679)],
    ("frappe", "tf4ctr"): [(TF4CTR_PAPER, 0.9872, None)],
    ("frappe", "dualmlp_bce"): [(TF4CTR_T2, 0.9837, None)],
    ("frappe", "dualmlp_tf"): [(TF4CTR_T2, 0.9855, None)],
    ("criteo", "dnn"): [(BARS_X1, 0.8137, 0.4382), (BARS_X4, 0.8140, 0.4380)],
    ("criteo", "dcnv2"): [(DLF_PAPER, 0.8085, 0.4431), (BARS_X1, 0.8142, 0.4378), (BARS_X4, 0.814514, 0.437631),
                          (TF4CTR_PAPER + ", Criteo_x4", 0.8140, None)],
    ("criteo", "dlf"): [(DLF_PAPER, 0.8106, 0.4412)],
    ("criteo", "tf4ctr"): [(TF4CTR_PAPER + ", Criteo_x4", 0.8150, None)],
    ("avazu", "dnn"): [(BARS_X1, 0.7638, 0.3674), (BARS_X4, 0.7928, 0.3722)],
    ("avazu", "dcnv2"): [(DLF_PAPER, 0.7565, 0.3722), (BARS_X1, 0.7656, 0.3664), (BARS_X4, 0.793146, 0.371865)],
    ("avazu", "dlf"): [(DLF_PAPER, 0.7601, 0.3706)],
}
# Short names for the Markdown table (the CSV carries the full protocol text); the legend goes under the table.
CODES = {DLF_PAPER: "DLF paper", BARS_X1: "BARS x1", BARS_X4: "BARS x4", TF4CTR_PAPER: "TF4CTR paper",
         TF4CTR_PAPER + ", Criteo_x4": "TF4CTR paper, Criteo_x4", TF4CTR_T2: "TF4CTR Table II",
         DLF_ABLATION: "DLF Table 3, Criteo / Avazu"}
DLF_ABLATIONS = {"full": "0.8106 / 0.7601", "w/o gate": "0.8095 / 0.7591", "w/o RLI": "0.8091 / 0.7590",
                 "w/o NAF": "0.8083 / 0.7575", "w/o RLI+NAF": "0.8084 / 0.7563"}


@dataclass(frozen=True)
class Row:
    """One table row: a config plus overrides, run once per seed."""

    label: str
    dataset: str  # frappe | criteo | avazu | synthetic
    config: str  # path relative to the repository root
    overrides: tuple[str, ...] = ()
    published_key: str = ""  # key into PUBLISHED with the dataset
    ablation: str = ""  # key into DLF_ABLATIONS
    note: str = ""
    throughput: bool = True  # measure the batch-4096 fwd+bwd column for this row (dlf/tf4ctr suites)

    def published(self, short: bool = False) -> str:
        """Published AUC / logloss with their protocol (``short``: the protocol's short name, see CODES)."""
        refs = PUBLISHED.get((self.dataset, self.published_key), [])
        parts = [f"{auc:.4f}" + (f" / {ll:.4f}" if ll is not None else "") + f" ({CODES[src] if short else src})"
                 for src, auc, ll in refs]
        if self.ablation:
            parts.append(f"{DLF_ABLATIONS[self.ablation]} ({CODES[DLF_ABLATION] if short else DLF_ABLATION})")
        return "; ".join(parts)


@dataclass
class RunResult:
    """One finished (or failed) trainer run."""

    label: str
    seed: int
    status: str
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    train_samples_per_s: float | None = None
    epochs_run: int = 0
    wall_s: float = 0.0
    command: str = ""


# ------------------------------------------------------------------------------------------------------------ suites
def dlf_variants(form: str) -> list[Row]:
    """Full + the four ablations of one DLF form on Frappe (authors' "full" = naf: true)."""
    base = ("model.form=" + form, "model.naf=true")
    note = "full = naf: true (the authors' default model has no attention)" if form == "authors" else ""
    variants = [
        ("full", (), note),
        ("w/o gate", ("model.gate=false",), ""),
        ("w/o RLI", ("model.rli=false",), ""),
        ("w/o NAF", ("model.naf=false",), ""),
        ("w/o RLI+NAF", ("model.rli=false", "model.naf=false"), ""),
    ]
    rows = []
    for name, extra, n in variants:
        overrides = base + extra  # later overrides win (model.naf=false after model.naf=true)
        rows.append(Row(f"DLF {form} {name}", "frappe", "configs/frappe/dlf.yaml", overrides,
                        published_key="dlf" if name == "full" else "", ablation=name, note=n))
    return rows


def suite_rows(suite: str, quick: bool) -> tuple[list[Row], list[str]]:
    """(rows, notes about rows deliberately left out)."""
    if quick:
        return [Row("DCNv2 (synthetic, quick)", "synthetic", "configs/synthetic/dcnv2.yaml", QUICK_OVERRIDES)], []
    if suite == "models":
        rows, notes = [], []
        names = {"dnn": "DNN", "dcnv2": "DCNv2", "dlf": "DLF (authors)", "tf4ctr": "TF4CTR"}
        for dataset, title in (("frappe", "Frappe"), ("criteo", "Criteo head"), ("avazu", "Avazu head")):
            for model, name in names.items():
                cfg = f"configs/{dataset}/{model}.yaml"
                if not os.path.exists(os.path.join(common.REPO_ROOT, cfg)):
                    notes.append(f"{name} on {title}: skipped, no {cfg} (TF4CTR has no Avazu config)")
                    continue
                rows.append(Row(f"{name} / {title}", dataset, cfg, published_key=model, throughput=False))
        return rows, notes
    if suite == "dlf":
        rows = [Row("DCNv2", "frappe", "configs/frappe/dcnv2.yaml", published_key="dcnv2"),
                Row("DNN", "frappe", "configs/frappe/dnn.yaml", published_key="dnn")]
        forms = dlf_variants("authors") + dlf_variants("paper")
        # The full models first, then the ablations: a suite cut short still has the headline comparison.
        return rows + [r for r in forms if r.ablation == "full"] + [r for r in forms if r.ablation != "full"], []
    if suite == "tf4ctr":
        dlf_encoder = ("model.complex_encoder={name: dlf, form: authors}",)
        return [
            Row("DualMLP BCE", "frappe", "configs/frappe/dualmlp_bce.yaml", published_key="dualmlp_bce"),
            Row("DualMLP TF loss", "frappe", "configs/frappe/dualmlp_tf.yaml", published_key="dualmlp_tf"),
            Row("TF4CTR SER+WSF", "frappe", "configs/frappe/tf4ctr.yaml", published_key="tf4ctr"),
            Row("TF4CTR SER+WSF, DLF complex encoder", "frappe", "configs/frappe/tf4ctr.yaml", dlf_encoder,
                note="complex encoder = DLF over-arch (authors' form, its config defaults) instead of the MLP"),
            Row("DCNv2 (reference)", "frappe", "configs/frappe/dcnv2.yaml", published_key="dcnv2"),
        ], []
    raise ValueError(f"unknown suite {suite!r}")


# ------------------------------------------------------------------------------------------------------- train runs
def _configured_epochs(row: Row) -> int:
    from dlf_torchrec.config import load_config

    return load_config(os.path.join(common.REPO_ROOT, row.config), list(row.overrides)).training.epochs


def epochs_cap(row: Row, args: argparse.Namespace) -> int:
    """The configured epochs capped by ``--max-epochs`` (head samples: ``--max-epochs-heads``)."""
    cap = args.max_epochs_heads if row.dataset in ("criteo", "avazu") else args.max_epochs
    configured = _configured_epochs(row)
    return configured if not cap else min(configured, cap)


def train_command(row: Row, seed: int, epochs: int, out_dir: str, quick_data: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "dlf_torchrec.train", "--config", row.config, *row.overrides,
           f"training.seed={seed}", f"training.epochs={epochs}", f"training.output_dir={out_dir}",
           "training.progress=false", "dataset.progress=false"]
    if quick_data:
        cmd.append(f"dataset.output_dir={quick_data}")
    return cmd


def run_one(row: Row, seed: int, epochs: int, work_dir: str, timeout: float, quick_data: str | None) -> RunResult:
    """Train once in a subprocess; collect results.json and the median train samples/s."""
    slug = "".join(c if c.isalnum() else "_" for c in row.label).strip("_")
    out_dir = os.path.join(work_dir, slug, f"seed{seed}")
    shutil.rmtree(out_dir, ignore_errors=True)  # a leftover checkpoint would make the trainer resume from it
    os.makedirs(out_dir, exist_ok=True)
    cmd = train_command(row, seed, epochs, out_dir, quick_data)
    shown = " ".join(shlex.quote(c) for c in ["python", *cmd[1:]])
    t0 = time.perf_counter()
    with open(os.path.join(out_dir, "train.log"), "w") as log:
        try:
            proc = subprocess.run(cmd, cwd=common.REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
            status = "ok" if proc.returncode == 0 else f"error: exit {proc.returncode} (see {out_dir}/train.log)"
        except subprocess.TimeoutExpired:
            status = f"error: timeout after {timeout:.0f} s"
    result = RunResult(row.label, seed, status, wall_s=time.perf_counter() - t0, command=shown)
    res_path = os.path.join(out_dir, "results.json")
    if status == "ok" and os.path.exists(res_path):
        with open(res_path) as f:
            res = json.load(f)
        result.valid = res.get("valid", {})
        result.test = res.get("test", {})
    elif status == "ok":
        result.status = "error: no results.json"
    speeds = []
    metrics = os.path.join(out_dir, "metrics.jsonl")
    if os.path.exists(metrics):
        with open(metrics) as f:
            for line in f:
                ev = json.loads(line)
                if ev.get("event") == "train_epoch":
                    speeds.append(float(ev["samples_per_s"]))
    result.epochs_run = len(speeds)
    result.train_samples_per_s = statistics.median(speeds) if speeds else None
    shutil.rmtree(os.path.join(out_dir, "checkpoints"), ignore_errors=True)  # results are collected; save disk
    return result


# ------------------------------------------------------------------------------------------------------- throughput
def random_batch(spec: Any, batch_size: int, generator: Any) -> Any:
    """A torchrec ``Batch`` on ``spec`` (a FeatureSpec): one uniform random id per field (never PAD or OOV),
    uniform dense features, ~30% positive labels."""
    import torch
    from torchrec.datasets.utils import Batch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    ids = torch.stack([torch.randint(1, max(2, f.vocab_size - 1), (batch_size,), generator=generator)
                       for f in spec.categorical])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=spec.categorical_names, values=ids.flatten(),
                                              lengths=torch.ones(ids.numel(), dtype=torch.int32))
    dense = torch.rand(batch_size, len(spec.dense), generator=generator)
    labels = (torch.rand(batch_size, generator=generator) < 0.3).float()
    return Batch(dense_features=dense, sparse_features=kjt, labels=labels)


def _throughput_worker(spec_path: str, out_path: str) -> int:
    """Subprocess entry: time fwd+bwd+optimiser at the given batch for each (label, config, overrides).

    Writes ``{label: {"samples_per_s", "peak_rss_mib", "minor_faults_per_step"} or {"error": message}}``.
    """
    from dlf_torchrec.distenv import rank_env

    os.environ.update(rank_env())  # a world of one of its own, even when started from a torchrun worker
    import logging
    import resource
    import warnings

    with open(spec_path) as f:
        spec = json.load(f)
    from dlf_torchrec.training.allocator import configure_cpu_allocator

    # Before torch allocates anything, as the trainer does (training.cpu_allocator).
    configure_cpu_allocator(spec.get("cpu_allocator", "tuned"))

    import throughput
    import torch

    from dlf_torchrec.config import load_config
    from dlf_torchrec.data.meta import DatasetMeta
    from dlf_torchrec.data.preprocess import ensure_preprocessed
    from dlf_torchrec.parallel import init_distributed, shutdown_distributed
    from dlf_torchrec.training.stack import build_training_stack

    warnings.filterwarnings("ignore")
    for name in ("torchrec", ""):
        logging.getLogger(name).setLevel(logging.ERROR)
    batch_size = int(spec["batch_size"])
    settings = throughput.Settings(0, 16, 4, 1, int(spec["windows"]), float(spec["window_seconds"]), 1.1, 2019)
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
                batches = [random_batch(fspec, batch_size, gen) for _ in range(settings.num_batches)]
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
                    elapsed, steps = throughput._time_steps(step, settings, 1)
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
    """Run :func:`_throughput_worker` in a fresh subprocess over ``jobs`` ({label, config, overrides}).

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
        subprocess.run([sys.executable, os.path.abspath(__file__), "--throughput-worker", spec_path, out_path],
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


# ---------------------------------------------------------------------------------------------------------- tables
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
                                    f"```bash\n{_finish_command(suite, args)}\n```"))
    sections.append(("Command", f"```bash\n{stamp['command']}\n```"))
    title = {"models": "Model quality: all models on Frappe, Criteo head, Avazu head",
             "dlf": "DLF on Frappe: forms and ablations vs DCNv2 / DNN",
             "tf4ctr": "TF4CTR on Frappe: DualMLP losses, SER+WSF, DLF complex encoder"}.get(suite, suite)
    if args.quick:
        title += " (--quick smoke run)"
    paths.append(common.write_markdown(os.path.join(out, f"quality_{suite}.md"), title, sections, stamp))
    return paths


def _finish_command(suite: str, args: argparse.Namespace) -> str:
    parts = [".venv/bin/python benchmarks/quality.py", f"--suite {suite}", f"--max-epochs {args.max_epochs}",
             "--seeds " + " ".join(map(str, args.seeds)), "--resume"]
    if suite == "models" and args.max_epochs_heads:
        parts.append(f"--max-epochs-heads {args.max_epochs_heads}")
    if args.out != common.DEFAULT_RESULTS_DIR:
        parts.append(f"--out {args.out}")
    return " ".join(parts)


def load_runs(path: str) -> list[RunResult]:
    runs = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    runs.append(RunResult(**json.loads(line)))
    return runs


# -------------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser("benchmarks/quality", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--suite", choices=SUITES, default="models")
    p.add_argument("--quick", action="store_true",
                   help="smoke run (< 1 min): one tiny DCNv2 on 3000 synthetic rows, 1 epoch, 1 seed")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="training.seed values (default: models 2019 2020 2021; dlf, tf4ctr 2019)")
    p.add_argument("--max-epochs", type=int, default=1,
                   help="cap on training.epochs for every row (0 = as configured); the default fits a suite into "
                        "the time of one shared 2-core session (one Frappe DCNv2 epoch ~ 20-50 s)")
    p.add_argument("--max-epochs-heads", type=int, default=0,
                   help="cap for the Criteo / Avazu head rows of the models suite (0 = as configured: 10 epochs with "
                        "early stopping; an epoch there is 16 steps)")
    p.add_argument("--only", nargs="+", default=None,
                   help="run only rows whose label contains one of these (the table still lists every row)")
    p.add_argument("--skip", nargs="+", default=None,
                   help="do not run rows whose label contains one of these (they stay pending in the table)")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished runs from quality_<suite>_runs.jsonl in --out instead of re-running them")
    p.add_argument("--no-throughput", action="store_true", help="skip the batch-4096 fwd+bwd column")
    p.add_argument("--throughput-batch", type=int, default=4096)
    p.add_argument("--throughput-windows", type=int, default=3)
    p.add_argument("--throughput-window-seconds", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=3600, help="seconds per trainer run (and for the throughput step)")
    p.add_argument("--work-dir", default=None, help="trainer output dirs (default: a temp dir)")
    p.add_argument("--out", default=common.DEFAULT_RESULTS_DIR, help="results directory")
    p.add_argument("--throughput-worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = [2019] if args.quick else DEFAULT_SEEDS[args.suite]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run("benchmarks/quality", lambda: _benchmark(args, argv), args.debug)


def _benchmark(args: argparse.Namespace, argv: list[str] | None) -> int:
    if args.throughput_worker:
        return _throughput_worker(*args.throughput_worker)
    stamp = common.make_stamp([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    suite = args.suite
    rows, notes = suite_rows(suite, args.quick)
    selected = [r for r in rows if (not args.only or any(o in r.label for o in args.only))
                and not any(o in r.label for o in args.skip or [])]
    work_dir = args.work_dir or tempfile.mkdtemp(prefix=f"dlf_quality_{suite}_")
    os.makedirs(work_dir, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    quick_data = os.path.join(work_dir, "data_quick") if args.quick else None
    runs_path = os.path.join(args.out, f"quality_{suite}_runs.jsonl")
    runs = load_runs(runs_path) if args.resume else []
    if not args.resume and os.path.exists(runs_path):
        os.remove(runs_path)
    caps = {r.label: epochs_cap(r, args) for r in rows}
    finish = _finish_command(suite, args)
    throughput_wanted = (suite in THROUGHPUT_SUITES or args.quick) and not args.no_throughput
    speeds: dict[str, Any] = {}
    speeds_path = os.path.join(args.out, f"quality_{suite}_throughput.json")
    if args.resume and os.path.exists(speeds_path):
        with open(speeds_path) as f:
            speeds = json.load(f)

    def flush() -> None:
        table = aggregate(rows, runs, args.seeds, caps, speeds, finish)
        write_tables(suite, table, args, stamp, notes, throughput_wanted)

    flush()
    start = time.perf_counter()
    done = {(r.label, r.seed) for r in runs if r.status == "ok"}
    runs = [r for r in runs if (r.label, r.seed) in done]  # failed runs are retried
    for seed in args.seeds:
        for row in selected:
            if (row.label, seed) in done:
                continue
            print(f"[{time.perf_counter() - start:6.0f}s] {row.label} seed {seed} (epochs <= {caps[row.label]}) ...",
                  flush=True)
            res = run_one(row, seed, caps[row.label], work_dir, args.timeout, quick_data)
            runs.append(res)
            with open(runs_path, "a") as f:
                f.write(json.dumps(res.__dict__) + "\n")
            print(f"    {res.status} valid auc={res.valid.get('auc', math.nan):.4f} "
                  f"logloss={res.valid.get('logloss', math.nan):.4f} epochs={res.epochs_run} {res.wall_s:.0f}s",
                  flush=True)
            flush()
    # Throughput after the quality runs: it is the cheaper column to finish later with --resume.
    if throughput_wanted:
        todo = [r for r in selected if r.throughput and not isinstance(speeds.get(r.label), float | int)]
        if args.quick:
            # The quick row's data lives in the work dir (not the config's shared data/processed/synthetic).
            todo = [Row(r.label, r.dataset, r.config, (*r.overrides, f"dataset.output_dir={quick_data}"))
                    for r in todo]
            os.makedirs(quick_data, exist_ok=True)
        speeds.update(measure_throughput(todo, args, work_dir))
        with open(speeds_path, "w") as f:
            json.dump(speeds, f, indent=1)
        flush()
    flush()
    print(f"wrote {args.out}/quality_{suite}.csv / .md, {runs_path} ({time.perf_counter() - start:.0f} s)")
    return 0 if all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
