"""Criteo-format TSV drawn from a known teacher, so the default experiment needs no download and has a known optimum.

Each row: ``label \\t I1..I13 \\t C1..C26`` like Kaggle Criteo. Categorical field j draws the rank of its token from
a Zipf law ``P(r) ∝ (r + 1)^-ZIPF`` over ``CARDINALITIES[j]`` values (Criteo's cardinalities scaled down to at
most 50k so that the default's 1M rows train in minutes on 2 cores) and writes it as 8 hex digits; a few percent
of values are empty. The label is Bernoulli(p) with the teacher's click probability::

    p = sigmoid(bias + sum_j w_j[t_j]                                  first order: per-token weights
                + sum_{(a, b)} lambda_ab <u_a[t_a], u_b[t_b]> / sqrt(K)    a few strongly interacting field pairs
                + 0.35 (log1p(I1) - 1.3) - 0.25 (log1p(I3) - 1.3))     numeric effects (missing = 0)

with ``w_j ~ N(0, FIRST_ORDER[j]^2)`` and ``u_j[t] ~ N(0, I_K)`` for the ``SIGNAL_RANKS`` most frequent tokens of
a field and 0 for the rest (the long tail is noise, as in real logs; a missing value contributes 0), and ``bias``
solved for a ~22% positive rate. The interaction terms have zero mean over either field, so a logistic regression (first
order only) cannot see them while a model with feature crosses can.

The generator also writes each row's TRUE probability p (float32, one per TSV line, ``<name>.prob.npy`` beside the
TSV). :func:`write_split_probabilities` aligns it with the preprocessed splits (``<split>/prob.bin``), and
:func:`oracle_auc` gives the Bayes-optimal AUC of a split: the AUC of the true p against the drawn labels.

CLI: ``python -m dlf_torchrec.data.synthetic --out path.tsv --rows N --seed S``
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator

import numpy as np

from dlf_torchrec import cli, io

# Criteo's C1..C26 cardinalities in order, the millions scaled down to tens of thousands.
CARDINALITIES = (1460, 583, 50_000, 30_000, 305, 24, 12_517, 633, 3, 9_000, 5_683, 40_000, 3_194, 27, 14_992,
                 30_000, 10, 5_652, 2_173, 4, 35_000, 18, 15, 20_000, 105, 15_000)
ZIPF = 1.2
# field index -> std of its first-order per-token weights (fields not listed carry no first-order signal).
FIRST_ORDER = {0: 0.5, 1: 0.4, 3: 0.3, 4: 0.5, 5: 0.4, 6: 0.3, 8: 0.4, 9: 0.3, 12: 0.4, 13: 0.5, 16: 0.4,
               19: 0.3, 21: 0.4, 24: 0.4}
# (field a, field b, lambda): the strongly interacting pairs.
PAIRS = ((5, 13, 1.0), (16, 21, 1.0), (22, 24, 0.8), (0, 1, 0.8))
LATENT_DIM = 4
# Only the SIGNAL_RANKS most frequent tokens of a field carry weights (the tail is noise, as in real logs).
SIGNAL_RANKS = 20
MISSING_RATE = 0.04
TARGET_CTR = 0.22
BLOCK_ROWS = 250_000
PROB_SUFFIX = ".prob.npy"
# One block of generated rows: labels, true probabilities, integer features, token ranks, missing mask.
RowBlock = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
PROB_FILE = "prob.bin"
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex8(values: np.ndarray) -> np.ndarray:
    """uint32 [n] -> S8 [n] lowercase hex (8 digits)."""
    v = values.astype(np.uint64)
    shifts = np.arange(28, -1, -4, dtype=np.uint64)
    nib = ((v[:, None] >> shifts) & np.uint64(15)).astype(np.intp)
    return np.ascontiguousarray(_HEX[nib]).view("S8")[:, 0]


def _token_values(field: int, idx: np.ndarray) -> np.ndarray:
    """Stable pseudo-random 32-bit hash of (field, token index)."""
    x = (idx.astype(np.uint64) + np.uint64(field * 1_000_003 + 1)) * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(29)
    return (x & np.uint64(0xFFFFFFFF)).astype(np.uint32)


class Teacher:
    """The known generative model (weights drawn from ``seed``); :meth:`sample` draws rows and their logits."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 1])
        head = np.arange(max(CARDINALITIES)) < SIGNAL_RANKS
        self.first = {j: rng.normal(0, s, CARDINALITIES[j]) * head[:CARDINALITIES[j]] for j, s in FIRST_ORDER.items()}
        latent_fields = sorted({f for a, b, _ in PAIRS for f in (a, b)})
        self.latent = {j: rng.normal(0, 1, (CARDINALITIES[j], LATENT_DIM)) * head[:CARDINALITIES[j], None]
                       for j in latent_fields}
        self.zipf_cdf = [np.cumsum((np.arange(c) + 1.0) ** -ZIPF) for c in CARDINALITIES]
        self.bias = 0.0

    def logit_parts(self, ints: np.ndarray, idx: np.ndarray, missing: np.ndarray) -> dict[str, np.ndarray]:
        """The teacher's logit (without bias) split into its terms, each [n]: ``first order`` (all fields' per-token
        weights), one ``Ca x Cb`` entry per interacting pair (1-based Criteo column names) and ``numeric``. Their sum,
        in this order, is the logit :meth:`sample` draws labels from. ``ints``: int64 min = missing."""
        first = np.zeros(len(idx))
        for j, w in self.first.items():
            first += np.where(missing[:, j], 0.0, w[idx[:, j]])
        parts = {"first order": first}
        for a, b, lam in PAIRS:
            dot = np.einsum("nk,nk->n", self.latent[a][idx[:, a]], self.latent[b][idx[:, b]])
            term = np.where(missing[:, a] | missing[:, b], 0.0, lam * dot / np.sqrt(LATENT_DIM))
            parts[f"C{a + 1} x C{b + 1}"] = term
        nan = np.iinfo(np.int64).min
        l1, l3 = (np.where(ints[:, c] == nan, 0.0, np.log1p(np.maximum(ints[:, c], 0))) for c in (0, 2))
        parts["numeric"] = 0.35 * (l1 - 1.3) - 0.25 * (l3 - 1.3)
        return parts

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """-> (logit without bias [n], ints int64 [n, 13] (int64 min = missing), token idx int64 [n, 26],
        missing bool [n, 26])."""
        idx = np.empty((n, 26), dtype=np.int64)
        for j, cdf in enumerate(self.zipf_cdf):
            idx[:, j] = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1]), len(cdf) - 1)
        missing = rng.random((n, 26)) < MISSING_RATE
        ints = np.floor(np.exp(rng.normal(1.5, 1.6, (n, 13)))).astype(np.int64) - 1
        ints[:, 1] -= 2  # I2 has negatives like Criteo
        ints_missing = rng.random((n, 13)) < np.linspace(0.02, 0.4, 13)
        ints = np.where(ints_missing, np.iinfo(np.int64).min, ints)
        logit = np.zeros(n)
        for part in self.logit_parts(ints, idx, missing).values():
            logit += part
        return logit, ints, idx, missing


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _calibrate(teacher: Teacher, seed: int) -> float:
    logit, *_ = teacher.sample(np.random.default_rng([seed, 2]), 50_000)
    lo, hi = -10.0, 10.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if _sigmoid(logit + mid).mean() < TARGET_CTR:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def draw_rows(rows: int, seed: int) -> Iterator[RowBlock]:
    """The rows :func:`generate_criteo_tsv` writes for ``(rows, seed)``, in blocks of at most ``BLOCK_ROWS``:
    (labels int64 [n], true probabilities [n], integer features [n, 13] (missing = int64 min), token ranks
    [n, 26], missing mask [n, 26])."""
    teacher = Teacher(seed)
    teacher.bias = _calibrate(teacher, seed)
    rng = np.random.default_rng([seed, 3])
    done = 0
    while done < rows:
        n = min(BLOCK_ROWS, rows - done)
        logit, ints, idx, missing = teacher.sample(rng, n)
        p = _sigmoid(logit + teacher.bias)
        yield (rng.random(n) < p).astype(np.int64), p, ints, idx, missing
        done += n


def _format_block(labels: np.ndarray, ints: np.ndarray, idx: np.ndarray, missing: np.ndarray) -> bytes:
    cols: list[list[bytes]] = [labels.astype("S1").tolist()]
    for j in range(13):
        v = ints[:, j]
        s = v.astype("S20")
        s[v == np.iinfo(np.int64).min] = b""
        cols.append(s.tolist())
    for j in range(26):
        s = _hex8(_token_values(j, idx[:, j]))
        s[missing[:, j]] = b""
        cols.append(s.tolist())
    return b"".join(b"\t".join(row) + b"\n" for row in zip(*cols, strict=True))


def prob_path(tsv: str | os.PathLike[str]) -> str:
    """The true-probability side file of a generated TSV: ``<tsv without extension>.prob.npy``."""
    return os.path.splitext(str(tsv))[0] + PROB_SUFFIX


def generate_criteo_tsv(path: str | os.PathLike[str], rows: int, seed: int) -> str:
    """Write ``rows`` Criteo-format lines drawn from the teacher to ``path`` and their true click probabilities
    (float32 [rows], line order) to :func:`prob_path` (both atomically); returns the TSV path."""
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    probs = np.empty(rows, dtype=np.float32)
    with io.atomic_open(path, "wb") as f:
        done = 0
        for labels, p, ints, idx, missing in draw_rows(rows, seed):
            f.write(_format_block(labels, ints, idx, missing))
            probs[done:done + len(p)] = p
            done += len(p)
    with io.atomic_open(prob_path(path), "wb") as f:
        np.save(f, probs)
    return path


def line_splits(tsv: str, ratios: list[float], split_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which split (index into :data:`~dlf_torchrec.data.splits.SPLITS`) the preprocessor assigns each line of the
    generated ``tsv`` to: (split int [lines], the file's bytes, line start offsets int64 [lines])."""
    from dlf_torchrec.data.splits import check_ratios, content_ends, random_splits

    buf = np.fromfile(tsv, dtype=np.uint8)
    newlines = np.flatnonzero(buf == ord("\n"))
    starts = np.concatenate([[0], newlines[:-1] + 1]).astype(np.int64)
    return random_splits(check_ratios(ratios), split_seed, buf, starts, content_ends(buf, starts)), buf, starts


def write_split_probabilities(data_dir: str, tsv: str, ratios: list[float], split_seed: int) -> None:
    """Write ``<split>/prob.bin`` (float32 [rows], the preprocessed split's row order) for every split of the
    preprocessed ``data_dir`` built from the generated ``tsv``.

    Each TSV line's split is recomputed exactly as the preprocessor assigns it (:func:`~dlf_torchrec.data.
    splits.random_splits` of the line's content, no header) and lines keep their file order inside a split,
    so the side file's probabilities select and align by a mask. The alignment is checked: every split must have
    as many rows as lines assigned to it and the same labels as those lines (generated rows are never rejected).
    """
    from dlf_torchrec.data.meta import DatasetMeta
    from dlf_torchrec.data.shards import open_split
    from dlf_torchrec.data.splits import SPLITS

    split, buf, starts = line_splits(tsv, ratios, split_seed)
    labels = (buf[starts] - ord("0")).astype(np.float32)
    probs = np.load(prob_path(tsv))
    if len(probs) != len(starts):
        raise ValueError(f"{prob_path(tsv)}: {len(probs)} probabilities for {len(starts)} lines of {tsv}")
    meta = DatasetMeta.load(data_dir)
    for i, name in enumerate(SPLITS):
        if name not in meta.splits:
            continue
        mask = split == i
        stored = open_split(data_dir, name, meta).labels
        if mask.sum() != len(stored) or not np.array_equal(stored, labels[mask]):
            raise ValueError(f"{data_dir}/{name}: rows do not align with the lines of {tsv} assigned to it")
        with io.atomic_open(os.path.join(data_dir, name, PROB_FILE), "wb") as f:
            f.write(probs[mask].astype("<f4").tobytes())


def has_split_probabilities(data_dir: str) -> bool:
    """Whether every split of the preprocessed ``data_dir`` has its ``prob.bin``."""
    from dlf_torchrec.data.meta import DatasetMeta

    meta = DatasetMeta.load(data_dir)
    return all(os.path.exists(os.path.join(data_dir, s, PROB_FILE)) for s in meta.splits)


def split_probabilities(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels float32 [N], true click probabilities float32 [N]) of one split of a synthetic dataset."""
    from dlf_torchrec.data.shards import _map, open_split

    labels = np.asarray(open_split(data_dir, split).labels)
    return labels, np.asarray(_map(os.path.join(data_dir, split, PROB_FILE), "<f4", (len(labels),)))


def main(argv: list[str] | None = None) -> int:
    ap = cli.ArgumentParser("synthetic", description="Generate a Criteo-format TSV drawn from the known teacher")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    return cli.run("synthetic", lambda: _generate(args), args.debug)


def _generate(args: argparse.Namespace) -> int:
    if args.rows < 1:
        raise cli.UsageError("--rows must be >= 1")
    generate_criteo_tsv(args.out, args.rows, args.seed)
    print(f"wrote {args.rows:,} rows to {args.out} (true probabilities: {prob_path(args.out)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
