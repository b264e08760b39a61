"""Multi-valued fields pay off: generated data whose signal sits in a bag of item ids, read as a bag vs as one token.

Usage::

    .venv/bin/python benchmarks/multivalued.py                    # 40k rows, 3 epochs, DNN; ~8 min on 2 shared cores
    .venv/bin/python benchmarks/multivalued.py --rows 4000 --epochs 1 --out /tmp/mv   # smoke run

The generated CSV (:func:`write_rows`): ``clk,user,item,history,tags,price``. Each of ``items`` item ids has a hidden
score s ~ N(0, 1); a row's ``history`` is 0..12 ids (``^``-separated, a sixth of them empty) and its label is
Bernoulli(sigmoid(2 * mean(s over the history) + 0.5 * s(item) - 0.3)); ``user`` is noise, ``tags`` are weighted
``tag:weight`` pairs (noise), ``price`` a number (noise). The same file is trained twice with the same model and
protocol, once with ``history`` as ``type: sequence`` (a mean-pooled bag sharing the ``item`` table) and once as
``type: categorical`` (the whole string as one token). Writes ``results.md`` and ``results.csv`` (valid and test
AUC / logloss per variant) under ``--out`` (default ``benchmarks/results/multivalued``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from common import make_stamp, markdown_table, write_csv, write_markdown  # noqa: E402

HEADER = "clk,user,item,history,tags,price"


def write_rows(path: str, rows: int, seed: int, items: int = 300) -> None:
    """Write ``rows`` generated rows (with the header) to ``path``; the item scores depend on ``seed`` only through
    a fixed draw, so every file of one seed shares the same hidden item scores."""
    score = np.random.default_rng(1234).normal(size=items)
    rng = np.random.default_rng(seed)
    lines = [HEADER]
    for _ in range(rows):
        n = 0 if rng.random() < 1 / 6 else int(rng.integers(1, 13))
        hist = rng.integers(0, items, n)
        item = int(rng.integers(0, items))
        logit = 2.0 * (score[hist].mean() if n else 0.0) + 0.5 * score[item] - 0.3
        label = int(rng.random() < 1 / (1 + np.exp(-logit)))
        tags = "|".join(f"t{rng.integers(0, 20)}:{rng.random():.3f}" for _ in range(int(rng.integers(0, 4))))
        lines.append(f"{label},u{rng.integers(0, 50)},i{item},{'^'.join(f'i{h}' for h in hist)},{tags},"
                     f"{rng.random() * 100:.2f}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def schema(as_bag: bool) -> dict:
    """The csv schema: ``history`` as a mean-pooled bag sharing the item table, or as one categorical token."""
    history = ({"name": "history", "type": "sequence", "separator": "^", "max_len": 10, "pooling": "mean",
                "share_embedding": "item"} if as_bag else {"name": "history", "type": "categorical"})
    return {"header": True, "label": "clk", "columns": [
        {"name": "clk", "type": "label"}, {"name": "user"}, {"name": "item"}, history,
        {"name": "tags", "type": "sequence", "separator": "|", "weighted": True},
        {"name": "price", "type": "numeric"}]}


def config(data: dict[str, str], out: str, as_bag: bool, epochs: int, model: str = "dnn") -> dict:
    """A complete experiment config for the generated files ``data`` (train / valid / test paths)."""
    return {
        "dataset": {"name": "multivalued", "format": "csv", **data, "schema": schema(as_bag), "min_count": 2,
                    "output_dir": os.path.join(out, "data"), "progress": False},
        "features": {"embedding_dim": 8, "init_std": 0.0001},
        "model": {"name": model, "hidden_units": [32, 16]},
        "optimizer": {"dense": {"name": "adam", "lr": 0.001}, "sparse": {"name": "rowwise_adagrad", "lr": 0.05},
                      "grad_clip_norm": 10.0},
        "training": {"batch_size": 256, "epochs": epochs, "seed": 2019, "num_workers": 0, "progress": False,
                     "early_stop_patience": 2, "output_dir": os.path.join(out, "run")},
    }


def train(cfg: dict, workdir: str) -> dict:
    """Run the trainer on ``cfg`` (one process); returns its results.json."""
    path = os.path.join(workdir, "config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    proc = subprocess.run([sys.executable, "-m", "dlf_torchrec.train", "--config", path], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"training failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    with open(os.path.join(cfg["training"]["output_dir"], "results.json")) as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=40000, help="train rows (valid and test get a quarter each)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--model", default="dnn")
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "multivalued"))
    args = ap.parse_args(argv)
    stamp = make_stamp()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = {}
        for k, (split, n) in enumerate([("train", args.rows), ("valid", args.rows // 4), ("test", args.rows // 4)]):
            data[split] = os.path.join(tmp, f"{split}.csv")
            write_rows(data[split], n, seed=k)
        for as_bag in (True, False):
            work = os.path.join(tmp, "bag" if as_bag else "token")
            os.makedirs(work)
            res = train(config(data, work, as_bag, args.epochs, args.model), work)
            rows.append({"history_as": "bag (sequence, mean, shared with item)" if as_bag else "one token",
                         "model": args.model, "epochs": args.epochs, "train_rows": args.rows,
                         **{f"{s}_{m}": round(float(res[s][m]), 4) for s in ("valid", "test")
                            for m in ("auc", "logloss")}})
    columns = list(rows[0])
    table = markdown_table(rows, columns)
    write_csv(os.path.join(args.out, "results.csv"), rows, columns, stamp)
    write_markdown(os.path.join(args.out, "results.md"), "Multi-valued field read as a bag vs as one token",
                   [("Results", table), ("Data", __doc__.split("\n\n", 2)[2])], stamp)
    for r in rows:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
