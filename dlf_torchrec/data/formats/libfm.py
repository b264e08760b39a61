"""``libfm``: ``label id:val id:val ...`` (whitespace separated; Frappe, MovieLens), label 1/-1 (or 0).

Every position is a categorical field ``f1..fN`` whose token is the id string (the value is ignored). N is
detected from the first non-blank line of the training file (:func:`detect_libfm_fields`), or at scoring time
taken from the trained dataset.
"""

from __future__ import annotations

import numpy as np

from dlf_torchrec.data.fastparse import MASK, FastParser, FastResult, Fields
from dlf_torchrec.data.formats.base import Format
from dlf_torchrec.data.schema import Column, Schema, SchemaError


def libfm_schema(num_fields: int | None) -> Schema:
    if num_fields is None:
        raise SchemaError("libfm: number of fields not given (detect it with formats.libfm.detect_libfm_fields)")
    if num_fields < 1:
        raise SchemaError(f"libfm: need at least one field, got {num_fields}")
    names = tuple(f"f{i}" for i in range(1, num_fields + 1))
    cols = (Column("label", "label"),) + tuple(Column(n, "categorical") for n in names)
    return Schema("libfm", cols, names, delimiter=None, header=False)


def detect_libfm_fields(line: bytes | str) -> int:
    """Number of feature positions of a libFM line (items after the label)."""
    b = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else bytes(line)
    return max(len(b.split()) - 1, 0)


def fast_libfm(f: Fields) -> FastResult:
    """Single-space separated ``label id:val ...`` lines with items of at most 8 bytes."""
    k, ln = f.window(slice(0, 1))
    b = k[:, 0].astype(">u8").view(np.uint8).reshape(-1, 8)
    one = (ln[:, 0] == 1) & (b[:, 0] == 49)
    zero = (ln[:, 0] == 1) & (b[:, 0] == 48)
    plus = (ln[:, 0] == 2) & (b[:, 0] == 43) & (b[:, 1] == 49)
    minus = (ln[:, 0] == 2) & (b[:, 0] == 45) & (b[:, 1] == 49)
    ok = one | zero | plus | minus
    labels = (one | plus).astype(np.float32)
    ik, il = f.window(slice(1, None))
    ib = np.ascontiguousarray(ik).astype(">u8").view(np.uint8).reshape(*ik.shape, 8)
    colon = ib == 58
    pos = colon.argmax(-1)
    ok &= ((il <= 8) & colon.any(-1) & (pos >= 1)).all(1)
    keys = ik & MASK[pos]
    return ok, labels, np.zeros((len(ok), 0), dtype=np.float64), keys


FORMAT = Format("libfm", lambda spec, num_fields: libfm_schema(num_fields),
                FastParser(fast_libfm, ord(" "), b"\t\x0b\x0c\r"), count_fields=detect_libfm_fields)
