"""``criteo``: Kaggle Criteo TSV, ``label \\t I1..I13 \\t C1..C26`` (40 columns, no header).

I-columns are integers (may be empty), C-columns 1-8 hex digits (may be empty). A first line naming the columns
(``label``, ``I1``.., ``C1``.., any order; tab-, comma-, semicolon- or bar-separated) is a header
(:func:`dlf_torchrec.data.reading.file_schema`).
"""

from __future__ import annotations

from dlf_torchrec.data.fastparse import FastParser, FastResult, Fields, hex_ok, label01, swar_ints
from dlf_torchrec.data.formats.base import Format
from dlf_torchrec.data.schema import Column, Schema

CRITEO_INT = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CAT = tuple(f"C{i}" for i in range(1, 27))


def criteo_schema() -> Schema:
    cols = (Column("label", "label"),) + tuple(Column(n, "int") for n in CRITEO_INT) + tuple(
        Column(n, "hex") for n in CRITEO_CAT)
    return Schema("criteo", cols, CRITEO_CAT, delimiter="\t", header="auto")


def fast_criteo(f: Fields) -> FastResult:
    ok, labels = label01(f, 0)
    ik, il = f.window(slice(1, 14))
    iok, numeric = swar_ints(ik, il)
    ok &= iok.all(1)
    ck, cl = f.window(slice(14, 40))
    ok &= hex_ok(ck, cl)
    return ok, labels, numeric, ck


FORMAT = Format("criteo", lambda spec, num_fields: criteo_schema(), FastParser(fast_criteo, ord("\t")))
