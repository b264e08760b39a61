"""Reference run: train the FuxiCTR model_zoo models and the DLF authors' code on our Frappe files, per-epoch table.

Issue #11 item 4: a reference run anyone can repeat. The reference is FuxiCTR ``fuxictr==2.3.10`` (PyPI) with the
``model_zoo`` source of the reczoo/FuxiCTR repository at a pinned commit, run with the BARS hyper-parameters
(``DCNv2_frappe_x1``, ``DNN_frappe_x1``) on the very files our Frappe configs use; and (``--models dlf``) the DLF
authors' released code (Keffee/DLF at a pinned commit, ``--dlf-src``: their ``models.DLF`` = ``DLF_default``, on
the same fuxictr wheel) with the hyper-parameters of our ``configs/frappe/dlf_authors_sizes.yaml``, to tell a
bug in our DLF from the architecture's own ceiling.

Two halves:

* the **driver** (this file; any Python 3.11, stdlib + ``benchmarks/common.py``): creates the reference virtualenv
  on first use (``python3.11 -m venv`` + ``pip install torch==2.13.0`` (the local CPU build) + ``fuxictr==2.3.10
  'polars<2'``), converts the libFM files to CSV in a temp dir, starts one worker per (model, seed), one at a time,
  and writes the tables;
* the **worker** (``--worker``, run by the venv's python; code in ``benchmarks/reference_worker.py``): imports
  fuxictr and the model class (``model_zoo/<model>/src`` of ``--fuxictr-src``, or the authors' ``models.py`` of
  ``--dlf-src``) and drives a run exactly like ``model_zoo/<model>/run_expid.py`` (seed_everything ->
  FeatureProcessor + build_dataset (CSV -> parquet) -> FeatureMap -> model -> RankDataLoader -> ``model.fit``), with
  two hooks that only observe: ``evaluate`` also computes logloss (FuxiCTR 2.3.10 evaluates only the monitor
  metric, AUC, between epochs; early stopping still sees AUC only), and ``checkpoint_and_earlystop`` appends one JSON
  line per evaluation (epoch, valid AUC/logloss, the LR the epoch trained with, the LR after the plateau rule,
  mean train loss incl. regulariser, elapsed seconds).

Data: libFM ``label id:val ...`` -> CSV ``label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,
city``: label ``1``/``+1`` -> 1, ``-1``/``0`` -> 0; the i-th item's id (the part before ``:``) becomes the i-th
field's string token, exactly as ``dlf_torchrec/data/parse.py`` maps libFM positions to fields ``f1..f10``. All ten
columns are ``dtype: str``, ``type: categorical``, ``min_categr_count: 1`` (FuxiCTR then gives each field a table
of 1 + (#distinct train tokens) + 1 rows: PAD at 0, OOV last). Nothing from the validation file is used to build
vocabularies.

Outputs in ``--out`` (default ``benchmarks/results/reference/``):

* ``<model>_seed<seed>.jsonl``: per run, a ``start`` line (command, versions, commit, machine, hyper-parameters),
  one ``eval`` line per epoch, an ``end`` line (best epoch/AUC/logloss, wall time); rewritten only by a new run;
* ``reference.csv`` / ``reference.md``: built from all ``*.jsonl`` present (plus ``--ours``), one row per epoch and
  per run columns ``<run>_auc``, ``<run>_logloss``, ``<run>_lr``; the Markdown also lists each run's summary and
  marks the standard runs that were not run (or did not finish).

``--ours metrics.jsonl[,...]`` (``LABEL=PATH`` to name a column) adds our trainer's valid AUC/logloss per epoch
(``event: eval`` lines; the last evaluation of each epoch counts) to the same tables. ``--report-only`` rebuilds
the tables without training.

Usage (from the repository root; the sources are checkouts of the pinned commits, outside this repo)::

    git clone https://github.com/reczoo/FuxiCTR /path/to/FuxiCTR && git -C /path/to/FuxiCTR checkout <PINNED>
    python3.11 benchmarks/reference.py --fuxictr-src /path/to/FuxiCTR --models dcnv2 --seeds 2019
    git clone https://github.com/Keffee/DLF /path/to/DLF && git -C /path/to/DLF checkout <PINNED_DLF>
    python3.11 benchmarks/reference.py --dlf-src /path/to/DLF --models dlf --seeds 2019
    python3.11 benchmarks/reference.py --report-only --ours runs/frappe_dcnv2/metrics.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dlf_torchrec import cli  # noqa: E402 (stdlib only, as this driver must be)

PINNED_FUXICTR_COMMIT = "0245987fdc1d43c36164ea496a02324885a8557a"  # reczoo/FuxiCTR main, 2026-06-05
PINNED_DLF_COMMIT = "972db344133c2fcc9841a0aaceb51f772c9db7c9"  # Keffee/DLF main (the only branch)
FUXICTR_VERSION = "2.3.10"
VENV_PACKAGES = [["torch==2.13.0"], [f"fuxictr=={FUXICTR_VERSION}", "polars<2", "torch==2.13.0"]]
FIELDS = ("user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city")
DEFAULT_TRAIN = "../shared/data/frappe_derived/frappe.train.reconstructed.libfm"
DEFAULT_VALID = "../shared/data/frappe_nfm/frappe.validation.libfm"
DEFAULT_VENV = os.path.join(os.path.expanduser("~"), ".cache", "dlf_torchrec", "fuxictr-venv")
# The runs the committed table is expected to hold; missing ones are listed as "not run".
STANDARD_RUNS = (("dcnv2", 2019), ("dnn", 2019), ("dcnv2", 2020), ("dcnv2", 2021), ("dlf", 2019))

# Hyper-parameters shared by both BARS Frappe_x1 configs (BARS reczoo/BARS ranking/ctr/{DCNv2,DNN}/*_frappe_x1,
# FuxiCTR 1.x key names mapped to 2.3.x: patience -> early_stop_patience, every_x_epochs 1 -> eval_steps None).
COMMON = dict(
    loss="binary_crossentropy", metrics=["AUC", "logloss"], task="binary_classification", optimizer="adam",
    learning_rate=1.0e-3, embedding_regularizer=0.05, net_regularizer=0, batch_size=4096, embedding_dim=10,
    epochs=100, shuffle=True, monitor="AUC", monitor_mode="max", early_stop_patience=2, min_categr_count=1,
    save_best_only=True, eval_steps=None, reduce_lr_on_plateau=True, num_workers=3, verbose=0,
    group_id=None, use_features=None, feature_specs=None, feature_config=None, debug_mode=False,
)
# DCNv2_frappe_x1_007_c207b717 (the BARS best of DCNv2_frappe_x1_tuner_config_03).
# DNN_frappe_x1_001_ad0f0fce (DNN_frappe_x1_tuner_config_02; the BARS log's seed is 2021, ours is --seeds).
MODELS = {
    "dcnv2": dict(model="DCNv2", zoo_dir=os.path.join("model_zoo", "DCNv2"), params=dict(
        model_structure="parallel", use_low_rank_mixture=False, low_rank=32, num_experts=4,
        stacked_dnn_hidden_units=[500, 500, 500], parallel_dnn_hidden_units=[400, 400, 400],
        dnn_activations="relu", num_cross_layers=4, net_dropout=0.4, batch_norm=True)),
    "dnn": dict(model="DNN", zoo_dir=os.path.join("model_zoo", "DNN", "DNN_torch"), params=dict(
        hidden_units=[400, 400, 400], hidden_activations="relu", net_dropout=0.2, batch_norm=True)),
    # The authors' `models.DLF` (their DLF_default) with our configs/frappe/dlf_authors_sizes.yaml; COMMON is that
    # config's training protocol too (configs/frappe/base.yaml; tests/test_benchmarks_reference.py checks both).
    # Their keys:
    # attention_layers = the number of DLF layers (our num_layers); num_emb_fmb = n_F of both low-rank blocks (our
    # num_tokens_high = num_tokens_low), num_emb_lcb = n_D (num_tokens_implicit); main_run.py forces all three
    # token counts to 32 whatever the yaml says. Block MLP (num_hidden_DLF 2): Linear(512) BN ReLU Dropout Linear
    # = our block_hidden 512; head (num_hidden_head 2): Linear(512) BN ReLU Dropout Linear(1) = our [512] head.
    # Their DLF_MLP always has BN (batch_norm is read by no DLF class); dropout = net_dropout.
    "dlf": dict(model="DLF", source="dlf", params=dict(
        attention_layers=3, num_emb_lcb=32, num_emb_fmb=32, num_emb_att=32, rank_fmb=24, num_hidden_DLF=2,
        dim_hidden_DLF=512, num_hidden_head=2, dim_hidden_head=512, dim_output=1, net_dropout=0, batch_norm=True)),
}

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results", "reference")


# ------------------------------------------------------------------------------------------------------ data
def libfm_to_csv(src: str, dst: str) -> int:
    """libFM -> FuxiCTR CSV (header ``label,<FIELDS>``). Returns the number of rows. Fails on any malformed line."""
    n = 0
    with open(src) as fin, open(dst, "w") as fout:
        fout.write(",".join(("label",) + FIELDS) + "\n")
        for lineno, line in enumerate(fin, 1):
            parts = line.split()
            if not parts:
                raise ValueError(f"{src}:{lineno}: blank line")
            if len(parts) != len(FIELDS) + 1:
                raise ValueError(f"{src}:{lineno}: expected {len(FIELDS) + 1} columns, got {len(parts)}")
            label = {"1": "1", "+1": "1", "-1": "0", "0": "0"}.get(parts[0])
            if label is None:
                raise ValueError(f"{src}:{lineno}: bad label {parts[0]!r}")
            ids = []
            for p in parts[1:]:
                ident, sep, _ = p.partition(":")
                if not sep or not ident or "," in ident:
                    raise ValueError(f"{src}:{lineno}: bad libfm item {p!r}")
                ids.append(ident)
            fout.write(label + "," + ",".join(ids) + "\n")
            n += 1
    return n


# ---------------------------------------------------------------------------------------------------- driver
def _run(cmd: list[str], **kw: object) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout.strip()  # type: ignore


def ensure_venv(venv: str) -> str:
    """The reference venv's python; created on first use (marker file ``.installed``)."""
    py = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, ".installed")
    if os.path.exists(marker):
        return py
    print(f"creating the FuxiCTR venv in {venv} (one-off, a few minutes)", flush=True)
    if not os.path.exists(py):
        subprocess.run(["python3.11", "-m", "venv", venv], check=True)
    # torch first and alone, so that pip takes the local CPU build; then fuxictr with torch pinned again, so that
    # no dependency can replace it with a CUDA build.
    for pkgs in VENV_PACKAGES:
        subprocess.run([py, "-m", "pip", "install", "-q", *pkgs], check=True)
    with open(marker, "w") as f:
        f.write(" ".join(" ".join(p) for p in VENV_PACKAGES) + "\n")
    return py


def venv_versions(py: str) -> dict[str, str]:
    code = ("import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('fuxictr', 'torch', 'polars', 'numpy', 'pandas', 'scikit-learn', 'ray')}))")
    return json.loads(_run([py, "-c", code]))


def source_commit(src: str, given: str | None, pinned: str, what: str, flag: str) -> str:
    """The commit of the checkout ``src`` (git, or ``given`` by ``flag``); warns if it is not ``pinned``."""
    try:
        found = _run(["git", "-C", src, "rev-parse", "HEAD"])
    except (OSError, subprocess.CalledProcessError):
        found = ""
    if given and found and given != found:
        raise cli.UsageError(f"{flag} {given} but {src} is at {found}")
    commit = given or found
    if not commit:
        raise cli.UsageError(f"{src} is not a git checkout: say which commit it is with {flag}")
    if commit != pinned:
        print(f"WARNING: {what} source at {commit}, the pinned commit is {pinned}", flush=True)
    return commit


DLF_FILES = ("models.py", "DLF_layers.py", "layers.py", "utils.py")


def check_sources(a: argparse.Namespace) -> dict[str, str]:
    """The start-line keys naming the code each model of ``a.models`` runs (``fuxictr_commit``, ``dlf_commit``)."""
    keys: dict[str, str] = {}
    for m in a.models:
        if MODELS[m].get("source") == "dlf":
            if not a.dlf_src:
                raise cli.UsageError("--models dlf needs --dlf-src (a checkout of Keffee/DLF)")
            src = os.path.abspath(a.dlf_src)
            missing = [f for f in DLF_FILES if not os.path.isfile(os.path.join(src, f))]
            if missing:
                raise cli.UsageError(f"{src}: no {', '.join(missing)} (not a Keffee/DLF checkout?)")
            if "dlf_commit" not in keys:
                keys["dlf_commit"] = source_commit(src, a.dlf_commit, PINNED_DLF_COMMIT, "DLF", "--dlf-commit")
        else:
            if not a.fuxictr_src:
                raise cli.UsageError(f"--models {m} needs --fuxictr-src (a checkout of reczoo/FuxiCTR)")
            src = os.path.abspath(a.fuxictr_src)
            if not os.path.isdir(os.path.join(src, MODELS[m]["zoo_dir"], "src")):
                raise cli.UsageError(f"{src}: no {MODELS[m]['zoo_dir']}/src (not a reczoo/FuxiCTR checkout?)")
            if "fuxictr_commit" not in keys:
                keys["fuxictr_commit"] = source_commit(src, a.fuxictr_commit, PINNED_FUXICTR_COMMIT, "FuxiCTR",
                                                       "--fuxictr-commit")
    return keys


def _commit_key(model: str) -> str:
    return "dlf_commit" if MODELS[model].get("source") == "dlf" else "fuxictr_commit"


def train_runs(a: argparse.Namespace, argv: list[str]) -> None:
    sys.path.insert(0, REPO_ROOT)
    from benchmarks.common import make_stamp

    commits = check_sources(a)
    py = ensure_venv(a.venv)
    versions = venv_versions(py)
    stamp = make_stamp(["benchmarks/reference.py", *argv])
    os.makedirs(a.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fuxictr_ref_") as tmp:
        csv_dir = os.path.join(tmp, "csv")
        os.makedirs(csv_dir)
        rows = {s: libfm_to_csv(p, os.path.join(csv_dir, f"{s}.csv")) for s, p in (("train", a.train),
                                                                                  ("valid", a.valid))}
        print(f"CSV: train {rows['train']} rows, valid {rows['valid']} rows", flush=True)
        for model in a.models:
            for seed in a.seeds:
                events = os.path.join(a.out, f"{model}_seed{seed}.jsonl")
                work = os.path.join(tmp, f"{model}_{seed}")
                with open(events, "w") as f:
                    f.write(json.dumps(dict(
                        event="start", model=model, seed=seed, command=stamp["command"], git_commit=stamp[
                            "git_commit"], utc_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        machine=stamp["machine"], load_average_at_start=os.getloadavg()[0],
                        **{_commit_key(model): commits[_commit_key(model)]},
                        versions=versions, train=a.train, valid=a.valid, rows=rows)) + "\n")
                src_flag = ["--dlf-src", os.path.abspath(a.dlf_src)] if _commit_key(model) == "dlf_commit" else [
                    "--fuxictr-src", os.path.abspath(a.fuxictr_src)]
                cmd = [py, os.path.abspath(__file__), "--worker", "--model", model, "--seed", str(seed), *src_flag,
                       "--csv-dir", csv_dir, "--work-dir", work, "--events", os.path.abspath(events), "--epochs",
                       str(a.epochs)]
                if a.nice:
                    cmd = ["nice", "-n", str(a.nice), *cmd]
                print(f"== {model} seed {seed}: {shlex.join(cmd)}", flush=True)
                t0 = time.time()
                with open(os.path.join(tmp, f"{model}_{seed}.log"), "w") as logf:
                    rc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=tmp).returncode
                wall = time.time() - t0
                if rc != 0:
                    with open(os.path.join(tmp, f"{model}_{seed}.log")) as logf:
                        print(logf.read()[-6000:], file=sys.stderr)
                with open(events, "a") as f:
                    f.write(json.dumps(dict(event="end", returncode=rc, wall_s=round(wall, 1))) + "\n")
                summary = summarize(read_events(events))
                print(f"== {model} seed {seed}: rc {rc}, {wall:.0f} s, best epoch {summary.get('best_epoch')} "
                      f"AUC {summary.get('best_auc')} logloss {summary.get('best_logloss')}", flush=True)
                write_tables(a.out, a.ours)


# ---------------------------------------------------------------------------------------------------- tables
def read_events(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def summarize(events: list[dict]) -> dict:
    evals = [e for e in events if e.get("event") == "eval"]
    start = next((e for e in events if e.get("event") == "start"), {})
    end = next((e for e in events if e.get("event") == "end"), None)
    model_ev = next((e for e in events if e.get("event") == "model"), {})
    out: dict = {"model": start.get("model"), "seed": start.get("seed"), "epochs": len(evals),
                 "status": "finished" if end and end.get("returncode") == 0 else
                 ("failed" if end else "unfinished"), "wall_s": end.get("wall_s") if end else None,
                 "table_rows": model_ev.get("table_rows"), "parameters": model_ev.get("parameters")}
    if evals:
        # FuxiCTR keeps the checkpoint of the last evaluation that beat the best by more than 1e-6 (`improved`);
        # a later epoch can show the same AUC to 6 decimals without replacing it.
        improved = [e for e in evals if e.get("improved")]
        best = improved[-1] if improved else max(evals, key=lambda e: e["auc"])
        out.update(best_epoch=best["epoch"], best_auc=round(best["auc"], 6), best_logloss=round(best["logloss"], 6))
    final = next((e for e in events if e.get("event") == "final"), None)
    if final:  # the restored best checkpoint, evaluated again after fit(): should equal the best epoch's row
        out.update(final_auc=round(final["auc"], 6), final_logloss=round(final["logloss"], 6))
    return out


def read_ours(spec: str) -> tuple[str, dict[int, dict]]:
    """``[LABEL=]PATH`` of our metrics.jsonl -> (label, {epoch: last eval event of that epoch})."""
    label, sep, path = spec.partition("=")
    if not sep:
        path = spec
        label = "ours_" + os.path.basename(os.path.dirname(os.path.abspath(path)))
    per_epoch: dict[int, dict] = {}
    for e in read_events(path):
        if e.get("event") == "eval" and e.get("split", "valid") == "valid":
            # our trainer counts epochs from 0 (the eval after the first pass has epoch 0); FuxiCTR from 1
            per_epoch[int(e["epoch"]) + 1] = e
    return label, per_epoch


def _md_value(column: str, value: object) -> object:
    """AUC to 6 decimals, logloss to 4, lr as 1e-03 (markdown_table would round everything to 4 digits)."""
    if not isinstance(value, float):
        return value
    if column.endswith("auc"):
        return f"{value:.6f}"
    if column.endswith("logloss"):
        return f"{value:.4f}"
    if column.endswith("_lr"):
        return f"{value:.0e}"
    return value


def write_tables(out: str, ours: list[str]) -> None:
    sys.path.insert(0, REPO_ROOT)
    from benchmarks.common import make_stamp, markdown_table, write_csv, write_markdown

    runs = {}
    for name in sorted(os.listdir(out)):
        if name.endswith(".jsonl"):
            runs[name[:-len(".jsonl")]] = read_events(os.path.join(out, name))
    columns: list[str] = ["epoch"]
    table: dict[int, dict] = {}
    summaries = []
    for run, events in runs.items():
        s = summarize(events)
        start = next((e for e in events if e.get("event") == "start"), {})
        s.update(run=run, fuxictr_commit=start.get("fuxictr_commit", "")[:12],
                 dlf_commit=start.get("dlf_commit", "")[:12], utc_time=start.get("utc_time"),
                 fuxictr=start.get("versions", {}).get("fuxictr"), torch=start.get("versions", {}).get("torch"))
        summaries.append(s)
        columns += [f"{run}_auc", f"{run}_logloss", f"{run}_lr"]
        for e in events:
            if e.get("event") == "eval":
                row = table.setdefault(e["epoch"], {"epoch": e["epoch"]})
                row.update({f"{run}_auc": round(e["auc"], 6), f"{run}_logloss": round(e["logloss"], 6),
                            f"{run}_lr": e["lr"]})
    for spec in ours:
        label, per_epoch = read_ours(spec)
        columns += [f"{label}_auc", f"{label}_logloss"]
        for ep, e in per_epoch.items():
            row = table.setdefault(ep, {"epoch": ep})
            row.update({f"{label}_auc": round(e["auc"], 6), f"{label}_logloss": round(e["logloss"], 6)})
        best_ep = max(per_epoch, key=lambda k: (per_epoch[k]["auc"], -k)) if per_epoch else None
        best = per_epoch.get(best_ep) if best_ep is not None else None
        summaries.append({"run": label, "model": "ours", "epochs": len(per_epoch), "status": spec,
                          "best_epoch": best_ep, "best_auc": best and round(best["auc"], 6),
                          "best_logloss": best and round(best["logloss"], 6)})
    rows = [table[k] for k in sorted(table)]
    stamp = make_stamp()
    starts = [next((e for e in ev if e.get("event") == "start"), {}) for ev in runs.values()]
    run_cmds = sorted({s.get("command", "") for s in starts if s})
    stamp["reference_commands"] = " ; ".join(run_cmds)
    # The driver's own python has no torch: report the reference venv's packages and the runs' machines instead.
    for key in ("torch", "torchrec", "fbgemm_gpu"):
        stamp.pop(key, None)
    for key, value in next((st.get("versions") for st in starts if st.get("versions")), {}).items():
        stamp[f"venv_{key}"] = value
    for key in ("fuxictr_commit", "dlf_commit"):
        commits = sorted({st[key] for st in starts if st.get(key)})
        if commits:
            stamp[key + "s"] = " ".join(commits)
    stamp["run_machines"] = " ; ".join(sorted({st["machine"] for st in starts if st.get("machine")}))
    write_csv(os.path.join(out, "reference.csv"), rows, columns, stamp)
    present = {(s.get("model"), s.get("seed")) for s in summaries}
    not_run = [f"{m} seed {s}" for m, s in STANDARD_RUNS if (m, s) not in present]
    sum_cols = ["run", "model", "seed", "status", "epochs", "best_epoch", "best_auc", "best_logloss", "final_auc",
                "final_logloss", "wall_s",
                "table_rows", "parameters", "fuxictr", "torch", "fuxictr_commit", "dlf_commit", "utc_time"]
    md_rows = [{c: _md_value(c, r.get(c)) for c in columns} for r in rows]
    for s in summaries:
        for k in ("best_auc", "best_logloss", "final_auc", "final_logloss"):
            s[k] = _md_value(k, s.get(k))
    sections = [
        ("What this is",
         "FuxiCTR 2.3.10 (PyPI) + reczoo/FuxiCTR `model_zoo` at the commit shown, BARS `DCNv2_frappe_x1` / "
         "`DNN_frappe_x1` hyper-parameters, trained on `frappe_derived/frappe.train.reconstructed.libfm`, "
         "early-stopped on `frappe_nfm/frappe.validation.libfm` (valid AUC monitored, patience 2, LR x0.1 on each "
         "plateau). `dlf_*` runs: the DLF authors' released code (Keffee/DLF at the `dlf_commit` shown: their "
         "`models.DLF`, i.e. `DLF_default`, on the same fuxictr 2.3.10 wheel) with the hyper-parameters of our "
         "`configs/frappe/dlf_authors_sizes.yaml` (the same protocol; 3 DLF layers, rank 24, 32/32/32 tokens, "
         "block MLP 512, "
         "head [512], BN, dropout 0). `ours_*` columns: our trainer's valid metrics per epoch (`--ours`). "
         "Built by `benchmarks/reference.py` (see `benchmarks/README.md`). `lr` is the learning rate the "
         "epoch trained with; the best epoch is the checkpoint FuxiCTR keeps."),
        ("Runs", markdown_table(summaries, sum_cols) + (
            "\n\nNot run: " + ", ".join(not_run) if not_run else "")),
        ("Commands", "\n".join(f"- `{c}`" for c in run_cmds) or "(none)"),
        ("Per-epoch valid AUC / logloss / lr", markdown_table(md_rows, columns)),
    ]
    write_markdown(os.path.join(out, "reference.md"),
                   "Reference runs (FuxiCTR, DLF authors' code) on Frappe, per epoch", sections, stamp)


# ------------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = cli.ArgumentParser("benchmarks/reference", description=__doc__.split("\n\n")[0])
    p.add_argument("--fuxictr-src", help="checkout of reczoo/FuxiCTR (its model_zoo is used), outside this repo")
    p.add_argument("--fuxictr-commit", help="the checkout's commit, if it is not a git work tree")
    p.add_argument("--dlf-src", help="checkout of Keffee/DLF (the authors' DLF code, for --models dlf)")
    p.add_argument("--dlf-commit", help="the DLF checkout's commit, if it is not a git work tree")
    p.add_argument("--models", type=lambda s: s.split(","), default=["dcnv2"], help="comma list of: "
                   + ", ".join(MODELS))
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[2019], help="comma list")
    p.add_argument("--epochs", type=int, default=100, help="epoch cap (BARS: 100; early stopping ends runs first)")
    p.add_argument("--train", default=os.path.join(REPO_ROOT, DEFAULT_TRAIN))
    p.add_argument("--valid", default=os.path.join(REPO_ROOT, DEFAULT_VALID))
    p.add_argument("--venv", default=DEFAULT_VENV, help="the FuxiCTR venv, created on first use")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--nice", type=int, default=5, help="nice level of the training process (0: none)")
    p.add_argument("--ours", type=lambda s: [x for x in s.split(",") if x], default=[],
                   help="our metrics.jsonl files ([LABEL=]PATH, comma separated) to add beside the reference")
    p.add_argument("--report-only", action="store_true", help="only rebuild reference.csv/.md from --out")
    # worker-only
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--csv-dir", help=argparse.SUPPRESS)
    p.add_argument("--work-dir", help=argparse.SUPPRESS)
    p.add_argument("--events", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for m in a.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r} (choose from {', '.join(MODELS)})")
    if not (a.worker or a.report_only or a.fuxictr_src or a.dlf_src):
        p.error("--fuxictr-src (dcnv2, dnn) or --dlf-src (dlf) is required to train (or use --report-only)")
    # A worker's traceback goes to its log, which the driver shows when it fails.
    return cli.run("benchmarks/reference", lambda: _reference(a, argv), a.debug or a.worker)


def _reference(a: argparse.Namespace, argv: list[str]) -> int:
    if a.worker:
        sys.path.insert(0, REPO_ROOT)
        from benchmarks.reference_worker import worker

        worker(a)
    elif a.report_only:
        os.makedirs(a.out, exist_ok=True)
        write_tables(a.out, a.ours)
    else:
        train_runs(a, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
