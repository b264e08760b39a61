"""benchmarks/peers.py and benchmarks/readers.py without their venvs (FuxiCTR, pyarrow/polars are not CI's): the
shared batches, the same architecture on both sides, the ratio table, and our reader's row counts."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
sys.path.insert(0, REPO)

import peers as P  # noqa: E402
import readers as R  # noqa: E402


def test_batches_hold_one_valid_id_per_field_and_the_stated_table_rows(tmp_path) -> None:
    path = str(tmp_path / "b.npz")
    rows = P.write_batches(path, 1000, batch=64, count=2, seed=0)
    data = np.load(path)
    names, vocab = list(data["names"]), data["vocab"]
    assert len(names) == 39 and rows == int(vocab.sum()) and data["ids"].shape == (2, 39, 64)
    assert (data["ids"] >= 1).all() and (data["ids"] <= vocab[None, :, None] - 2).all()  # never PAD or OOV
    assert max(vocab) == 1000  # the cap, PAD and OOV included
    assert P.vocab_sizes(0)[1][13 + 2] == 10131227 + 2  # 0 = the full Criteo table


@pytest.mark.parametrize("model", ["dnn", "dcnv2", "tf4ctr", "dlf"])
def test_our_side_builds_the_peer_architecture(model: str) -> None:
    """Our config section and the peer's hyper-parameters describe the same network (the benchmark also records
    both sides' parameter counts: equal for DNN, DCNv2 and TF4CTR, +32 for the DLF authors' unused label table)."""
    from dlf_torchrec.config import build_config

    ours, _, _, _, peer = P.MODELS[model]
    m = build_config({"model": ours}).model
    if model == "dnn":
        assert m.hidden_units == peer["hidden_units"] and m.dropout == peer["net_dropout"]
    elif model == "dcnv2":
        assert m.structure == peer["model_structure"] and m.num_cross_layers == peer["num_cross_layers"]
        assert m.hidden_units == peer["parallel_dnn_hidden_units"] and m.low_rank is None
        assert not peer["use_low_rank_mixture"]
    elif model == "tf4ctr":
        assert (m.ssem, m.dfm) == (peer["SSM"].lower(), peer["DFM"].lower()) and m.loss == "twin_focus"
        assert m.simple_hidden_units == peer["easy_hidden_units"]
        assert m.complex_hidden_units == peer["hard_hidden_units"]
        assert (m.alpha, m.c, m.gamma) == (peer["alpha"], peer["c"], peer["gamma"]) and m.dropout == peer["net_dropout"]
    else:
        assert m.form == "authors" and m.num_layers == peer["attention_layers"] and m.rank == peer["rank_fmb"]
        assert m.num_tokens_high == m.num_tokens_low == peer["num_emb_fmb"]
        assert m.num_tokens_implicit == peer["num_emb_lcb"] and m.block_hidden == peer["dim_hidden_DLF"]
    assert m.batch_norm == peer["batch_norm"]
    assert P.PEER_COMMON["embedding_regularizer"] == P.PEER_COMMON["net_regularizer"] == 0


def test_summary_ratio_and_failures() -> None:
    ok = {"status": "ok", "rate": 200.0, "square_peak_gflops": 100.0, "mflop": 100.0, "peak_rss_mib": 1.0,
          "parameters": 7}
    row = P.summarise("dnn", 1000, 5, [ok, {**ok, "rate": 300.0}], [{**ok, "rate": 100.0}])
    assert row["status"] == "ok" and row["ours_over_peer"] == 2.5 and row["ours_pct_of_peak"] == 25.0
    failed = P.summarise("dnn", 1000, 5, [ok], [{"status": "error: exit 1"}])
    assert failed["status"] == "error: exit 1" and "ours_over_peer" not in failed


def test_our_reader_parses_every_row(tmp_path) -> None:
    from dlf_torchrec.data.synthetic import generate_criteo_tsv

    path = generate_criteo_tsv(str(tmp_path / "c.tsv"), 3000, seed=1)
    for task in R.TASKS:
        res = R.run_ours(task, path, workers=2, chunk_rows=700)
        assert res["rows"] == 3000 and res["seconds"] > 0
