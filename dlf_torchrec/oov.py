"""Out-of-vocabulary (OOV) accounting for scoring: how many values of each field map to the field's OOV id.

The OOV id (``vocab_size - 1``, :mod:`dlf_torchrec.data.features`) stands for three things at once: a token never
seen in training, a token seen fewer than ``dataset.min_count`` times, and a missing value (empty column, numeric
bucket 0). The ids do not tell them apart, so the rates here count all three ("out of vocabulary").

Because rare and missing values are OOV in the training data too (on the 10k-row Criteo head with ``min_count: 10``
about 38% of all values, over 70% in C3 or I12), a raw rate says little on its own. Each field's rate is compared
with the same rate on a reference split of the preprocessed dataset (``valid``, else ``train``; at most
:data:`REFERENCE_ROWS` rows, read in evenly spaced blocks). A field is flagged when its *excess*
``(rate - reference) / (1 - reference)`` is above the threshold: the share of the values the model would know on
data like the training data that are unknown here (1.0 when every token is new). Without a reference split (its
files were deleted) the excess is the rate itself. A bag (multi-valued) field's rate is per item: its OOV items over
its items.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlf_torchrec import io
from dlf_torchrec.data.shards import Bags, open_split
from dlf_torchrec.run import Run

# Rows of the reference split read for its OOV rates, and the number of evenly spaced blocks they come in.
REFERENCE_ROWS = 1 << 18
REFERENCE_BLOCKS = 64
# Fields named in the summary line.
TOP_FIELDS = 5


@dataclass
class Reference:
    """OOV rates float64 [F] of a preprocessed split (``rows`` of it read)."""

    split: str
    rows: int
    rates: np.ndarray


def oov_ids(run: Run) -> np.ndarray:
    """The OOV id of each categorical field, then of each bag field, int64 [F + S] (model input order)."""
    return np.array([f.vocab_size - 1 for f in run.meta.categorical] + [b.vocab_size - 1 for b in run.meta.bags],
                    dtype=np.int64)


def reference_blocks(n: int, rows: int, blocks: int) -> list[tuple[int, int]]:
    """(start, stop) of ``blocks`` evenly spaced blocks covering ``rows`` of ``n`` rows (one block when n <= rows)."""
    if n <= rows:
        return [(0, n)]
    size = max(rows // blocks, 1)
    starts = np.linspace(0, n - size, blocks).astype(np.int64)
    return [(int(s), int(s) + size) for s in starts]


def reference_rates(run: Run, rows: int = REFERENCE_ROWS) -> Reference | None:
    """OOV rates of the run's ``valid`` split (else ``train``), or None when its files cannot be read."""
    split = "valid" if "valid" in run.meta.splits else "train"
    try:
        arrays = open_split(run.data_dir, split, run.meta)
    except (OSError, ValueError, KeyError):
        return None
    sparse, n_cat = arrays.sparse, len(run.meta.categorical)
    oov = oov_ids(run).astype(np.int32)
    counts, totals = np.zeros(len(oov), dtype=np.int64), np.zeros(len(oov), dtype=np.int64)
    for start, stop in reference_blocks(len(sparse), rows, REFERENCE_BLOCKS):
        counts[:n_cat] += (np.asarray(sparse[start:stop]) == oov[:n_cat]).sum(axis=0)
        totals[:n_cat] += stop - start
        for j, (offsets, values, _) in enumerate(arrays.bags):
            items = np.asarray(values[offsets[start]:offsets[stop]])
            counts[n_cat + j] += int((items == oov[n_cat + j]).sum())
            totals[n_cat + j] += len(items)
    seen = int(totals[0]) if n_cat else len(sparse)
    return Reference(split, seen, counts / np.maximum(totals, 1)) if seen else None


def excess(rates: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """(rate - reference) / (1 - reference), clipped to [0, 1] (0 where the reference is all OOV); ``rates`` itself
    without a reference."""
    if reference is None:
        return rates
    room = 1.0 - reference
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(room > 0, (rates - reference) / room, 0.0)
    return np.clip(out, 0.0, 1.0)


def pct(x: float) -> str:
    """A fraction as a percentage with one decimal."""
    return f"{100 * x:.1f}%"


class OovCounter:
    """Per-field OOV counts over the scored rows (one vectorised comparison per chunk)."""

    def __init__(self, keys: list[str], oov: np.ndarray, reference: Reference | None, bags: int = 0) -> None:
        self.keys, self.oov, self.reference = keys, oov, reference  # categorical fields, then ``bags`` bag fields
        self.n_cat = len(keys) - bags
        self.counts = np.zeros(len(keys), dtype=np.int64)
        self.items = np.zeros(len(keys), dtype=np.int64)  # bag fields: items seen (categorical: unused)
        self.rows = 0

    @classmethod
    def for_run(cls, run: Run) -> OovCounter:
        return cls(run.keys + [b.name for b in run.meta.bags], oov_ids(run), reference_rates(run), len(run.meta.bags))

    def add(self, sparse: np.ndarray, bags: list[Bags] | None = None) -> None:
        """Count the OOV ids of a chunk's ids int64 [m, F] and of its bag fields' items."""
        n_cat = self.n_cat
        self.counts[:n_cat] += (sparse == self.oov[:n_cat]).sum(axis=0)
        for j, bag in enumerate(bags or []):
            self.counts[n_cat + j] += int((bag.values == self.oov[n_cat + j]).sum())
            self.items[n_cat + j] += len(bag.values)
        self.rows += len(sparse)

    @property
    def rates(self) -> np.ndarray:
        totals = np.concatenate([np.full(self.n_cat, self.rows), self.items[self.n_cat:]])
        return self.counts / np.maximum(totals, 1)

    def flagged(self, threshold: float) -> list[str]:
        """Fields whose excess OOV rate is above ``threshold``, worst first."""
        ex = self.excess()
        return [self.keys[j] for j in self.worst_first() if ex[j] > threshold]

    def excess(self) -> np.ndarray:
        """Excess OOV rate float64 [F] of each field over the reference split's (see the module docstring)."""
        return excess(self.rates, self.reference.rates if self.reference else None)

    def worst_first(self) -> list[int]:
        """Field indices by excess, then rate, highest first."""
        return np.lexsort((-self.rates, -self.excess())).tolist()

    def summary(self) -> str:
        """``predict: out-of-vocabulary values: ...`` with the overall rate and the fields of highest excess."""
        ref = self.reference
        fields = ", ".join(f"{self.keys[j]} {pct(self.rates[j])}" + (f" ({ref.split} {pct(ref.rates[j])})"
                                                                     if ref else "")
                           for j in self.worst_first()[:TOP_FIELDS])
        base = f" ({ref.split} split: {pct(float(ref.rates.mean()))})" if ref else " (no reference split)"
        order = f"furthest above the {ref.split} split" if ref else "highest"
        return (f"predict: out-of-vocabulary values (unseen, rare in training or missing): "
                f"{pct(float(self.rates.mean()))} of values overall{base}; {order}: {fields}")

    def warning(self, threshold: float) -> str | None:
        """``predict: warning: ...`` naming the flagged fields, or None."""
        names = self.flagged(threshold)
        if not names:
            return None
        ref = self.reference
        what = (f"out of vocabulary far more often than in the {ref.split} split (over {pct(threshold)} of the "
                f"values the model knows there are unknown here)" if ref else
                f"over {pct(threshold)} of the values are out of vocabulary")
        return (f"predict: warning: {', '.join(names)}: {what}; scores for such rows fall back to the OOV embedding "
                f"of these fields (the input may not match the training data)")

    def report(self, threshold: float) -> dict[str, Any]:
        """The per-field counts and rates as a JSON-able dict (``--oov-report``)."""
        ref, ex = self.reference, self.excess()
        fields = {k: {"oov": int(self.counts[j]), "rate": float(self.rates[j]), "excess": float(ex[j]),
                      "reference_rate": float(ref.rates[j]) if ref else None}
                  for j, k in enumerate(self.keys)}
        return {"rows": self.rows, "threshold": threshold, "rate": float(self.rates.mean()),
                "reference": {"split": ref.split, "rows": ref.rows, "rate": float(ref.rates.mean())} if ref else None,
                "warned": self.flagged(threshold), "fields": fields}

    def finish(self, threshold: float, report_path: str | None) -> None:
        """Print the summary (and the warning) to stderr; write the JSON report when a path is given."""
        if report_path is not None:
            io.write_json(report_path, self.report(threshold))
        if self.rows == 0:
            return
        print(self.summary(), file=sys.stderr)
        warning = self.warning(threshold)
        if warning:
            print(warning, file=sys.stderr)
