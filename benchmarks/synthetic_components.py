"""Which part of the synthetic teacher does a trained run miss? Its logit regressed on the teacher's terms.

The synthetic teacher's logit is a sum of known terms (``Teacher.logit_parts`` in ``dlf_torchrec/data/synthetic.py``:
first-order token weights, one term per interacting field pair, the numeric effects). A model that had learnt the
teacher would output logit = bias + the sum of the terms, so a least-squares fit of the run's logit on the terms
over the valid split gives a coefficient of 1 for each; a coefficient of 0.4 means the model reproduces only 40% of
that term's variation (shrunk or not found), and the residual is what the model adds that the teacher does not
have (noise fitted from the tail tokens, or a term learnt in a distorted shape).

    python benchmarks/synthetic_components.py --run runs/synthetic_dcnv2 [--run ...]

The run is scored with ``python -m dlf_torchrec.predict`` on its generated raw file; each line's split is recomputed
exactly as the preprocessor assigns it. Writes ``--out``/synthetic_components.{csv,md}``, stamped.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402

from dlf_torchrec import cli  # noqa: E402

COLUMNS = ("run", "term", "term_std", "coefficient", "corr_with_model", "model_auc", "oracle_auc", "residual_std")


def components(run_dir: str) -> list[dict[str, object]]:
    """One row per teacher term (plus a ``total`` row) for the run in ``run_dir``, over its valid split."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from dlf_torchrec.config import load_config
    from dlf_torchrec.data import synthetic as syn
    from dlf_torchrec.data.formats.synthetic import raw_path
    from dlf_torchrec.data.splits import SPLITS

    cfg = load_config(os.path.join(run_dir, "config.yaml")).dataset
    if cfg.format != "synthetic":
        raise cli.UsageError(f"{run_dir}: dataset.format is {cfg.format!r}, not synthetic")
    tsv = raw_path(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "pred.txt")
        subprocess.run([sys.executable, "-m", "dlf_torchrec.predict", "--run", run_dir, "--input", tsv, "--output",
                        out, "--no-progress"], check=True)
        prob = np.clip(np.loadtxt(out), 1e-7, 1 - 1e-7)
    logit = np.log(prob / (1 - prob))
    split, _, _ = syn.line_splits(tsv, cfg.split, cfg.split_seed)
    teacher = syn.Teacher(cfg.synthetic_seed)
    blocks = list(syn.draw_rows(cfg.synthetic_rows, cfg.synthetic_seed))
    labels = np.concatenate([b[0] for b in blocks])
    true_p = np.concatenate([b[1] for b in blocks])
    parts: dict[str, list[np.ndarray]] = {}
    for _, _, ints, idx, missing in blocks:
        for name, part in teacher.logit_parts(ints, idx, missing).items():
            parts.setdefault(name, []).append(part)
    terms = {name: np.concatenate(p) for name, p in parts.items()}
    if not len(logit) == len(labels) == len(split):
        raise ValueError(f"{run_dir}: {len(logit)} predictions for {len(labels)} generated rows")
    valid = split == SPLITS.index("valid")
    x = np.stack([t[valid] for t in terms.values()] + [np.ones(valid.sum())], axis=1)
    coef, *_ = np.linalg.lstsq(x, logit[valid], rcond=None)
    residual = float((logit[valid] - x @ coef).std())
    model_auc = roc_auc_score(labels[valid], logit[valid])
    oracle_auc = roc_auc_score(labels[valid], true_p[valid])
    base = {"run": os.path.basename(os.path.normpath(run_dir)), "model_auc": round(model_auc, 5),
            "oracle_auc": round(oracle_auc, 5), "residual_std": round(residual, 3)}
    rows = [{**base, "term": name, "term_std": round(float(t[valid].std()), 3), "coefficient": round(float(c), 3),
             "corr_with_model": round(float(np.corrcoef(logit[valid], t[valid])[0, 1]), 3)}
            for (name, t), c in zip(terms.items(), coef, strict=False)]
    total = sum(terms.values())[valid]
    rows.append({**base, "term": "total (teacher logit)", "term_std": round(float(total.std()), 3),
                 "coefficient": "", "corr_with_model": round(float(np.corrcoef(logit[valid], total)[0, 1]), 3)})
    for r in rows:
        print(f"{r['run']}: {r['term']:>22}  std {r['term_std']}  coef {r['coefficient']}  corr "
              f"{r['corr_with_model']}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser("benchmarks/synthetic_components", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", nargs="+", required=True, help="trained synthetic run directories")
    parser.add_argument("--out", default=os.path.join(common.DEFAULT_RESULTS_DIR, "synthetic"))
    args = parser.parse_args(argv)

    def body() -> int:
        stamp = common.make_stamp()
        rows = [r for run in args.run for r in components(run)]
        common.write_table(args.out, "synthetic_components", "Synthetic default: which teacher terms a run reproduces",
                           __doc__, rows, COLUMNS, stamp)
        return 0

    return cli.run("benchmarks/synthetic_components", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
