"""benchmarks/reference.py without its venv: the DLF reference's hyper-parameters are our shipped Frappe config,
the source checks, the libFM -> CSV conversion and the tables (no training here: the reference venv is not CI's)."""

from __future__ import annotations

import argparse
import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import reference as R  # noqa: E402
from dlf_torchrec import cli  # noqa: E402
from dlf_torchrec.config import load_config  # noqa: E402


def test_dlf_reference_runs_our_authors_sizes_frappe_config() -> None:
    """`--models dlf` trains the authors' code with exactly configs/frappe/dlf_authors_sizes.yaml's settings."""
    cfg = load_config(os.path.join(REPO, "configs", "frappe", "dlf_authors_sizes.yaml"))
    p = dict(R.COMMON, **R.MODELS["dlf"]["params"])
    m, t, o = cfg.model, cfg.training, cfg.optimizer
    # protocol (FuxiCTR BaseModel keys)
    assert p["embedding_dim"] == cfg.features.embedding_dim == 10
    assert p["batch_size"] == t.batch_size and p["epochs"] == t.epochs
    assert p["optimizer"] == o.dense.name == o.sparse.name == "adam" and o.sparse.kernel == "dense"
    assert p["learning_rate"] == o.dense.lr == o.sparse.lr
    assert o.dense.weight_decay == o.sparse.weight_decay == 0 and p["net_regularizer"] == 0
    # FuxiCTR: (lambda / 2) * ||E||^2 over whole tables every step = our `table` mode
    assert p["embedding_regularizer"] == o.embedding_regularizer and o.embedding_regularizer_mode == "table"
    assert t.monitor == {"auc": 1.0} and p["monitor"] == "AUC" and p["monitor_mode"] == "max"
    assert p["early_stop_patience"] == t.early_stop_patience
    assert p["reduce_lr_on_plateau"] and t.lr_decay_factor == 0.1 and t.min_lr == 1e-6  # lr_decay(0.1, 1e-6)
    assert o.grad_clip_norm == 10.0  # the authors' fit(max_gradient_norm=10.)
    assert cfg.features.init_std == 1e-4  # their FeatureEmbeddingDict: normal_(std=1e-4)
    assert cfg.dataset.min_count == p["min_categr_count"] == 1
    # architecture: their DLF_default keys (docs/models.md#dlf-authors-form)
    assert m.form == "authors" and not m.use_naf  # no attention block = their `DLF` class
    assert m.gate and m.rli  # the projected residual + LN, and both low-rank blocks, as in their code
    assert p["attention_layers"] == m.num_layers == 3
    assert p["rank_fmb"] == m.rank
    assert p["num_emb_fmb"] == m.num_tokens_high == m.num_tokens_low
    assert p["num_emb_lcb"] == m.num_tokens_implicit
    assert p["num_hidden_DLF"] == 2 and p["dim_hidden_DLF"] == m.block_hidden
    assert m.head_units == [p["dim_hidden_head"]] * (p["num_hidden_head"] - 1)
    assert p["dim_output"] == 1
    assert p["net_dropout"] == m.dropout == 0 and m.batch_norm and p["batch_norm"]


def test_sources_are_checked_per_model(tmp_path) -> None:
    ns = dict(fuxictr_src=None, fuxictr_commit=None, dlf_src=None, dlf_commit=None)
    with pytest.raises(cli.UsageError, match="--dlf-src"):
        R.check_sources(argparse.Namespace(models=["dlf"], **ns))
    with pytest.raises(cli.UsageError, match="--fuxictr-src"):
        R.check_sources(argparse.Namespace(models=["dnn"], **dict(ns, dlf_src=str(tmp_path))))
    src = tmp_path / "DLF"
    src.mkdir()
    with pytest.raises(cli.UsageError, match="models.py"):
        R.check_sources(argparse.Namespace(models=["dlf"], **dict(ns, dlf_src=str(src))))
    for name in R.DLF_FILES:
        (src / name).write_text("")
    with pytest.raises(cli.UsageError, match="--dlf-commit"):  # not a git work tree: say which commit
        R.check_sources(argparse.Namespace(models=["dlf"], **dict(ns, dlf_src=str(src))))
    got = R.check_sources(argparse.Namespace(models=["dlf"], **dict(ns, dlf_src=str(src),
                                                                    dlf_commit=R.PINNED_DLF_COMMIT)))
    assert got == {"dlf_commit": R.PINNED_DLF_COMMIT}


def test_cli_needs_a_source_to_train() -> None:
    with pytest.raises(SystemExit) as e:
        R.main(["--models", "dlf"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        R.main(["--models", "nope", "--report-only"])
    assert e.value.code == 2


def test_libfm_to_csv_maps_positions_to_fields(tmp_path) -> None:
    src = tmp_path / "a.libfm"
    src.write_text("-1 " + " ".join(f"{i}:1" for i in range(10)) + "\n1 " + " ".join(f"{i + 5}:1" for i in range(10))
                   + "\n")
    assert R.libfm_to_csv(str(src), str(tmp_path / "a.csv")) == 2
    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert lines[0] == "label," + ",".join(R.FIELDS)
    assert lines[1] == "0," + ",".join(str(i) for i in range(10))
    assert lines[2].split(",")[:2] == ["1", "5"]
    src.write_text("1 1:1 2:1\n")
    with pytest.raises(ValueError, match="expected 11 columns"):
        R.libfm_to_csv(str(src), str(tmp_path / "b.csv"))


def _write_jsonl(path, events) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def test_tables_hold_reference_dlf_and_ours_columns(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    start = dict(event="start", model="dlf", seed=2019, command="python benchmarks/reference.py --models dlf",
                 dlf_commit=R.PINNED_DLF_COMMIT, utc_time="2026-01-01T00:00:00Z", machine="m",
                 versions={"fuxictr": "2.3.10", "torch": "2.13.0+cpu"})
    evals = [dict(event="eval", epoch=e, auc=a, logloss=0.2, lr=1e-3, improved=i)
             for e, a, i in ((1, 0.95, True), (2, 0.97, True), (3, 0.96, False))]
    _write_jsonl(out / "dlf_seed2019.jsonl", [start, dict(event="model", table_rows=5365, parameters=9),
                                              *evals, dict(event="end", returncode=0, wall_s=1.0)])
    ours = tmp_path / "metrics.jsonl"
    _write_jsonl(ours, [dict(event="eval", split="valid", epoch=0, auc=0.96, logloss=0.3),
                        dict(event="eval", split="valid", epoch=1, auc=0.975, logloss=0.25)])
    R.write_tables(str(out), [f"mine={ours}"])
    md = (out / "reference.md").read_text()
    assert "dlf_seed2019_auc" in md and "mine_auc" in md
    assert "| dlf_seed2019 | dlf | 2019 | finished | 3 | 2 | 0.970000 |" in md  # best = last improvement
    assert "| mine | ours |" in md and "0.975000" in md
    assert "972db344133c" in md and "dlf_commits: " + R.PINNED_DLF_COMMIT in md
    assert "dlf seed 2019" not in md.split("Not run:")[-1]  # present, so not listed as missing
    assert "dcnv2 seed 2019" in md.split("Not run:")[-1]
    header = (out / "reference.csv").read_text().splitlines()
    assert any(line.startswith("epoch,dlf_seed2019_auc") for line in header)
