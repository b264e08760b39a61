"""How close to the oracle can any model get on the synthetic default? A well-specified model's ratio.

The synthetic teacher (``dlf_torchrec/data/synthetic.py``) is known, so the best *learnable* score at a given number
of rows can be estimated by a model that knows the teacher's structure and only has to estimate its parameters: a
logistic regression on exactly the teacher's features (one-hot of each field's ``SIGNAL_RANKS`` head tokens with
the tail and missing values lumped, one-hot of the head x head cells of each interacting pair, the two numeric
effects). Its ratio (AUC - 0.5) / (oracle AUC - 0.5) on a held-out 10% is what estimation noise alone leaves of
the oracle's margin at that training size; a generic model (DCNv2 over all tokens) cannot be expected to beat it.
``--design all_tokens`` fits a second regression that is told the interacting pairs but not which tokens carry
signal (every token seen ``MIN_COUNT`` times, and the pairs' cells over those tokens): what fitting the tail's noise
costs even when the structure of the interactions is given. Two factorized models trained with Adam (torch) go
further: ``--design pairs_factorized`` is told the pairs *and* the teacher's form of interaction (each token of an
interacting field gets a ``LATENT_DIM`` vector, a pair scores their inner product) but not which tokens carry
signal; ``--design fwfm`` is told nothing (a field-weighted factorization machine: every token one weight and one
``LATENT_DIM`` vector, all 325 field pairs scored by inner products with one learnt weight per pair), i.e. a
generic CTR model. Both see every token seen ``MIN_COUNT`` times in the train part (the product's rule) and the 13
numeric columns as standardised log1p; "C" is the inverse of their L2 strength (sum of the losses + ½‖θ‖² / C, as
scikit-learn's), and each trains until its held-out AUC stops improving.

    python benchmarks/synthetic_ceiling.py --rows 200000 1000000 --design teacher all_tokens
    python benchmarks/synthetic_ceiling.py --rows 200000 1000000 --C 0.0033 0.01 0.05 --design pairs_factorized fwfm
    python benchmarks/synthetic_ceiling.py --budget    # what a given error in the model's logit costs

``--budget`` instead scores the true logit with one kind of error at a time on 400k teacher rows: a teacher term
left out, a term at a fraction of its strength, or independent Gaussian noise of a given std added to every logit
(the ratio a model reaches whose logit is the truth plus that error; e.g. the residual std that
``benchmarks/synthetic_components.py`` measures). Writes ``synthetic_error_budget.{csv,md}``.

Rows are drawn exactly as the generator draws them (same teacher seed and row stream); the 80/10/10 split is a
seeded random permutation (statistically, not row for row, the preprocessor's split). L2 strength C is picked on the
held-out part, so the number is an optimistic ceiling. Writes ``--out``/synthetic_ceiling.{csv,md}``, stamped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402

from dlf_torchrec import cli  # noqa: E402

COLUMNS = ("rows", "design", "train_rows", "C", "auc", "oracle_auc", "ratio")
BUDGET_COLUMNS = ("error", "term_std", "auc", "oracle_auc", "ratio")
DESIGNS = ("teacher", "all_tokens", "pairs_factorized", "fwfm")
FACTORIZED_DESIGNS = ("pairs_factorized", "fwfm")
MIN_COUNT = 10  # the synthetic configs' dataset.min_count


def kept_tokens(idx: object, missing: object, count_rows: object) -> tuple[object, object]:
    """Each field's tokens seen ``MIN_COUNT`` times among ``count_rows`` renumbered 0..v-1 (in token order, which is
    the generator's frequency order), v = the rarer ones and missing values: (ids int64 [rows, 26], v int [26])."""
    import numpy as np

    from dlf_torchrec.data import synthetic as syn

    tok, kept_per_field = np.empty_like(idx), np.empty(26, dtype=np.int64)
    for j in range(26):
        counts = np.bincount(idx[count_rows][~missing[count_rows, j], j], minlength=syn.CARDINALITIES[j])
        rank = np.full(len(counts), -1)
        kept = np.flatnonzero(counts >= MIN_COUNT)
        rank[kept] = np.arange(len(kept))
        tok[:, j] = np.where(missing[:, j] | (rank[idx[:, j]] < 0), len(kept), rank[idx[:, j]])
        kept_per_field[j] = len(kept)
    return tok, kept_per_field


def factorized_inputs(rows: int, seed: int, train: object) -> tuple[object, object, object, int, object]:
    """The generator's ``rows`` as the factorized models see them: (labels [rows], true probabilities [rows], token
    ids int64 [rows, 26] into one table (per field: the tokens seen ``MIN_COUNT`` times in ``train``, then one id for
    the rest and missing), that table's size, the 13 numeric columns as log1p standardised on ``train`` [rows, 13])."""
    import numpy as np

    from dlf_torchrec.data import synthetic as syn

    blocks = list(syn.draw_rows(rows, seed))
    labels, prob, ints, idx, missing = (np.concatenate(parts) for parts in zip(*blocks, strict=True))
    tok, kept = kept_tokens(idx, missing, train)
    ends = np.cumsum(kept + 1)
    nan = np.iinfo(np.int64).min
    num = np.log1p(np.where(ints == nan, 0, np.maximum(ints, 0)))
    return labels, prob, tok + ends - (kept + 1), int(ends[-1]), (num - num[train].mean(0)) / num[train].std(0)


def teacher_design(rows: int, seed: int, design: str = "teacher") -> tuple[object, object, object]:
    """(sparse design matrix [rows, p], labels int [rows], true probabilities [rows]) of the generator's rows.

    ``teacher``: each field's ``SIGNAL_RANKS`` head tokens one-hot (tail and missing lumped), the head x head cells of
    the interacting pairs. ``all_tokens``: the same pairs, but every token seen ``MIN_COUNT`` times one-hot (the rest
    and missing lumped, like the product's ``dataset.min_count``, which counts the train split only: here all
    generated rows) and the cells over those tokens, i.e. a model told which pairs interact but not that the tail
    carries nothing."""
    import numpy as np
    from scipy import sparse

    from dlf_torchrec.data import synthetic as syn

    blocks = list(syn.draw_rows(rows, seed))  # the generated file's rows
    labels, prob, ints, idx, missing = (np.concatenate(parts) for parts in zip(*blocks, strict=True))
    if design == "teacher":
        tok = np.where(missing, syn.SIGNAL_RANKS, np.minimum(idx, syn.SIGNAL_RANKS))  # head 0..k-1, k = the rest
        vocab = np.full(26, syn.SIGNAL_RANKS + 1)
    else:
        tok, _ = kept_tokens(idx, missing, np.arange(rows))
        vocab = tok.max(0) + 1
    row = np.arange(rows)
    columns = [sparse.csr_matrix((np.ones(rows), (row, tok[:, j])), shape=(rows, vocab[j])) for j in range(26)]
    columns += [sparse.csr_matrix((np.ones(rows), (row, tok[:, a] * vocab[b] + tok[:, b])),
                                  shape=(rows, vocab[a] * vocab[b])) for a, b, _ in syn.PAIRS]
    nan = np.iinfo(np.int64).min
    numeric = [np.where(ints[:, c] == nan, 0.0, np.log1p(np.maximum(ints[:, c], 0))) for c in (0, 2)]
    columns.append(sparse.csr_matrix(np.stack(numeric, 1)))
    return sparse.hstack(columns).tocsr(), labels, prob


def factorized_auc(labels: object, ids: object, table_rows: int, num: object, c: float, design: str, train: object,
                   held: object, seed: int, max_epochs: int = 30) -> float:
    """Held-out AUC of a factorized model (``pairs_factorized`` or ``fwfm``, see the module docstring) fitted by Adam
    (lr 3e-3, batch 1024, one thread, seeded) on the ``train`` rows of :func:`factorized_inputs` with L2 ``1 / c``,
    the best epoch by held-out AUC (stops 2 epochs after the best)."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from dlf_torchrec.data import synthetic as syn

    pairs = ([(a, b) for a, b, _ in syn.PAIRS] if design == "pairs_factorized"
             else [(a, b) for a in range(26) for b in range(a + 1, 26)])
    torch.manual_seed(seed)
    with _one_thread():
        ids, x_num, y = torch.from_numpy(ids), torch.tensor(num, dtype=torch.float32), torch.tensor(labels).float()
        first = torch.zeros(table_rows, requires_grad=True)
        vec = (0.01 * torch.randn(table_rows, syn.LATENT_DIM)).requires_grad_()
        w_num, bias = torch.zeros(13, requires_grad=True), torch.zeros(1, requires_grad=True)
        pair_w = torch.ones(len(pairs), requires_grad=design == "fwfm")
        pa, pb = torch.tensor([a for a, _ in pairs]), torch.tensor([b for _, b in pairs])
        opt = torch.optim.Adam([first, vec, w_num, bias] + ([pair_w] if design == "fwfm" else []), lr=3e-3)

        def logit(rows_: torch.Tensor) -> torch.Tensor:
            g = ids[rows_]
            e = vec[g]
            return bias + first[g].sum(1) + ((e[:, pa] * e[:, pb]).sum(-1) * pair_w).sum(1) + x_num[rows_] @ w_num

        best, since, held_t = 0.0, 0, torch.from_numpy(held)
        for epoch in range(max_epochs):
            order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(train))
            for start in range(0, len(order), 1024):
                batch = order[start:start + 1024]
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logit(batch), y[batch], reduction="sum")
                loss = (loss + 0.5 / c * ((first ** 2).sum() + (vec ** 2).sum()) * len(batch) / len(train)) / len(batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                auc = roc_auc_score(labels[held], logit(held_t).numpy())
            best, since = (auc, 0) if auc > best else (best, since + 1)
            if since >= 2:
                break
    return best


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run a block with one torch thread (deterministic sums), restoring the count after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def ceiling(rows: int, seed: int, cs: list[float], design: str = "teacher") -> list[dict[str, object]]:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    perm = np.random.default_rng(0).permutation(rows)
    train, held = perm[:int(0.8 * rows)], perm[int(0.8 * rows):int(0.9 * rows)]
    if design in FACTORIZED_DESIGNS:
        y, p, ids, table_rows, num = factorized_inputs(rows, seed, train)
    else:
        x, y, p = teacher_design(rows, seed, design)
    oracle = roc_auc_score(y[held], p[held])
    out = []
    for c in cs:
        if design in FACTORIZED_DESIGNS:
            auc = factorized_auc(y, ids, table_rows, num, c, design, train, held, seed)
        else:
            from sklearn.linear_model import LogisticRegression

            model = LogisticRegression(C=c, max_iter=3000).fit(x[train], y[train])
            auc = roc_auc_score(y[held], model.predict_proba(x[held])[:, 1])
        out.append({"rows": rows, "design": design, "train_rows": len(train), "C": c,
                    "auc": round(auc, 5), "oracle_auc": round(oracle, 5),
                    "ratio": round((auc - 0.5) / (oracle - 0.5), 4)})
        print(f"rows {rows:,} {design} C {c}: AUC {auc:.4f} | oracle {oracle:.4f} | "
              f"ratio {out[-1]['ratio']:.3f}", file=sys.stderr, flush=True)
    return out


def error_budget(rows: int, seed: int, noise_stds: list[float], partial: dict[str, float]) -> list[dict[str, object]]:
    """The ratio of the true logit with one error at a time (see the module docstring) on ``rows`` teacher rows."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from dlf_torchrec.data import synthetic as syn

    teacher = syn.Teacher(seed)
    rng = np.random.default_rng([seed, 99])
    logit, ints, idx, missing = teacher.sample(rng, rows)
    parts = teacher.logit_parts(ints, idx, missing)
    labels = rng.random(rows) < syn._sigmoid(logit + syn._calibrate(teacher, seed))
    oracle = roc_auc_score(labels, logit)

    def row(error: str, term_std: float, score: object) -> dict[str, object]:
        auc = roc_auc_score(labels, score)
        return {"error": error, "term_std": round(term_std, 3), "auc": round(auc, 5), "oracle_auc": round(oracle, 5),
                "ratio": round((auc - 0.5) / (oracle - 0.5), 4)}

    out = [row(f"without {name}", float(term.std()), logit - term) for name, term in parts.items()]
    out += [row(f"{name} at {share:g} of its strength", float(parts[name].std()), logit - (1 - share) * parts[name])
            for name, share in partial.items()]
    out += [row(f"logit + N(0, {s:g}^2) noise", s, logit + rng.normal(0, s, rows)) for s in noise_stds]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser("benchmarks/synthetic_ceiling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000], help="generated rows (default 200000)")
    parser.add_argument("--seed", type=int, default=7, help="dataset.synthetic_seed (default 7, the shipped one)")
    parser.add_argument("--C", type=float, nargs="+", default=[0.1, 0.3, 1.0], dest="cs", help="L2 strengths tried")
    parser.add_argument("--design", nargs="+", choices=DESIGNS, default=["teacher"],
                        help="teacher: LR told the pairs and the signal tokens; all_tokens: LR told the pairs only; "
                             "pairs_factorized: told the pairs and their form; fwfm: told nothing")
    parser.add_argument("--out", default=common.DEFAULT_RESULTS_DIR)
    parser.add_argument("--budget", action="store_true", help="the error budget table instead (400k rows)")
    args = parser.parse_args(argv)

    def body() -> int:
        stamp = common.make_stamp()
        if args.budget:
            results = error_budget(400_000, args.seed, [0.2, 0.35, 0.54], {"C23 x C25": 0.35})
            common.write_table(args.out, "synthetic_error_budget",
                               "Synthetic default: what an error in the model's logit costs", __doc__.split(
                                   "\n\n", 2)[2], results, BUDGET_COLUMNS, stamp)
            return 0
        results = [r for rows in args.rows for d in args.design for r in ceiling(rows, args.seed, args.cs, d)]
        common.write_table(args.out, "synthetic_ceiling",
                           "Synthetic default: a well-specified model's share of the oracle margin", __doc__, results,
                           COLUMNS, stamp)
        return 0

    return cli.run("benchmarks/synthetic_ceiling", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
