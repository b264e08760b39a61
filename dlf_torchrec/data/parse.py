"""Raw lines -> typed rows, or a rejection with a reason.

Two entry points with identical semantics:

* :func:`parse_line` (reference, per row): ``bytes | str -> Row``; raises :class:`RowRejected` (and nothing else)
  for any input. Used for libfm/csv, for single rows and as the slow path of the chunk parser.
* :func:`parse_chunk` (vectorised): a buffer of whole lines -> :class:`ParsedChunk` of numpy columns. Criteo and
  Avazu rows are validated and decoded with numpy on the whole chunk; only lines the fast path cannot accept
  (malformed, or unusual such as tokens longer than 8 bytes) go through :func:`parse_line`, so the reasons and line
  indices of rejections always come from the reference parser. The fast parser of a format is the one its module
  in :mod:`dlf_torchrec.data.formats` declares.

Row rules (all formats): the line terminator (``\\n``, ``\\r\\n``) is removed; a NUL byte rejects the line
("nul byte"); a line of only whitespace is a "blank line"; a wrong number of columns is "wrong field count".
Empty values are allowed and mean missing. Column rules:

* label: ``0``/``1`` (libFM: ``1``/``+1`` -> 1, ``-1``/``0`` -> 0), else "bad label". Under a csv label rule
  (:class:`~dlf_torchrec.data.schema.LabelRule`): a threshold needs a decimal number ("non-numeric label"), a value
  map one of its values ("label not in map").
* int (Criteo I1..I13): ``-?[0-9]+``, optionally float-formatted (``104.0``, ``-1.``: a point and zeros only), else
  "non-integer in int field"; more than 18 digits: "int out of range".
* numeric (csv): a decimal float (``[+-]?digits[.digits][e[+-]digits]``), finite, else "non-numeric in numeric field".
* hex (Criteo C1..C26): 1-8 hex digits, else "non-hex categorical id".
* categorical: any bytes up to ``MAX_TOKEN_BYTES`` (else "token too long"); libFM items must be ``id:value`` with a
  non-empty id, else "bad libfm item" (the value is ignored, the token is the id).
* hour (Avazu): ``YYMMDDHH`` with a real date 20YY-MM-DD and HH <= 23, else "bad hour".
* sequence (csv, :mod:`~dlf_torchrec.data.bags`): items split on the column's separator, each token up to
  ``MAX_TOKEN_BYTES`` ("token too long"); weighted items must be ``token:weight`` with a finite decimal weight, else
  "bad bag weight".

Categorical tokens are bytes (``b""`` = missing). In :class:`ParsedChunk` a categorical column is either a uint64
array of *packed* tokens (tokens of at most 8 bytes, big-endian, zero padded: order-preserving, 0 = missing) or,
when some token is longer, a numpy ``S`` array (``b""`` = missing).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from dataclasses import dataclass

import numpy as np

from dlf_torchrec.data.bags import BagColumn, item_weight, split_items
from dlf_torchrec.data.fastparse import Fields
from dlf_torchrec.data.formats import FORMATS
from dlf_torchrec.data.schema import MAX_TOKEN_BYTES, Column, LabelRule, Schema

BLANK = "blank line"
FIELD_COUNT = "wrong field count"
NON_INT = "non-integer in int field"
INT_RANGE = "int out of range"
NON_NUMERIC = "non-numeric in numeric field"
NON_HEX = "non-hex categorical id"
BAD_LABEL = "bad label"
BAD_HOUR = "bad hour"
BAD_ITEM = "bad libfm item"
TOKEN_TOO_LONG = "token too long"
NUL_BYTE = "nul byte"
BAD_INPUT = "not text"
LABEL_NOT_NUMBER = "non-numeric label"
LABEL_NOT_IN_MAP = "label not in map"
BAD_WEIGHT = "bad bag weight"
REASONS = (BLANK, FIELD_COUNT, NON_INT, INT_RANGE, NON_NUMERIC, NON_HEX, BAD_LABEL, BAD_HOUR, BAD_ITEM,
           TOKEN_TOO_LONG, NUL_BYTE, BAD_INPUT, LABEL_NOT_NUMBER, LABEL_NOT_IN_MAP, BAD_WEIGHT)

class RowRejected(ValueError):
    """A raw line that is not a valid row. ``reason`` is one of :data:`REASONS`; ``detail`` says where/what."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Row:
    """One parsed row: ``label`` in {0., 1.}, ``numeric`` per numeric column (None = missing), ``categorical``
    tokens in ``schema.categorical_fields`` order (``b""`` = missing), ``bags`` per bag column (file order) its
    item tokens and, when weighted, their weights; ``joined`` per side table whether the row's key was found."""

    label: float
    numeric: tuple[float | None, ...]
    categorical: tuple[bytes, ...]
    bags: tuple[tuple[tuple[bytes, ...], tuple[float, ...] | None], ...] = ()
    joined: tuple[bool, ...] = ()


_INT_RE = re.compile(rb"(-?[0-9]+)(?:\.0*)?")
_FLOAT_RE = re.compile(rb"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_RE = re.compile(rb"[0-9a-fA-F]{1,8}")
_HOUR_RE = re.compile(rb"[0-9]{8}")


def _short(b: bytes, n: int = 24) -> str:
    return repr(b[:n]) + ("..." if len(b) > n else "")


def _to_bytes(line: bytes | str) -> bytes:
    if isinstance(line, bytes):
        return line
    if isinstance(line, bytearray | memoryview):
        return bytes(line)
    if isinstance(line, str):
        return line.encode("utf-8", "surrogatepass")
    raise RowRejected(BAD_INPUT, type(line).__name__)


def _label(p: bytes, libfm: bool) -> float:
    if p == b"1" or (libfm and p == b"+1"):
        return 1.0
    if p == b"0" or (libfm and p == b"-1"):
        return 0.0
    raise RowRejected(BAD_LABEL, _short(p))


def _ruled_label(rule: LabelRule, p: bytes, name: str) -> float:
    if rule.mapping:
        label = next((v for k, v in rule.mapping if k == p), None)
        if label is None:
            raise RowRejected(LABEL_NOT_IN_MAP, f"{name}={_short(p)}")
        return label
    if not _FLOAT_RE.fullmatch(p) or not math.isfinite(value := float(p)):
        raise RowRejected(LABEL_NOT_NUMBER, f"{name}={_short(p)}")
    return 1.0 if rule.holds(value) else 0.0


def _int(p: bytes, name: str) -> float | None:
    if not p:
        return None
    match = _INT_RE.fullmatch(p)
    if match is None:
        raise RowRejected(NON_INT, f"{name}={_short(p)}")
    digits = match.group(1)
    if len(digits) - (digits[:1] == b"-") > 18:
        raise RowRejected(INT_RANGE, f"{name}={_short(p)}")
    return float(int(digits))


def _float(p: bytes, name: str) -> float | None:
    if not p:
        return None
    if not _FLOAT_RE.fullmatch(p):
        raise RowRejected(NON_NUMERIC, f"{name}={_short(p)}")
    v = float(p)
    if not math.isfinite(v):
        raise RowRejected(NON_NUMERIC, f"{name}={_short(p)} is not finite")
    return v


def _hex(p: bytes, name: str) -> bytes:
    if p and not _HEX_RE.fullmatch(p):
        raise RowRejected(NON_HEX, f"{name}={_short(p)}")
    return p


def _token(p: bytes, name: str) -> bytes:
    if len(p) > MAX_TOKEN_BYTES:
        raise RowRejected(TOKEN_TOO_LONG, f"{name} has {len(p)} bytes > {MAX_TOKEN_BYTES}")
    return p


def _bag(p: bytes, col: Column) -> tuple[tuple[bytes, ...], tuple[float, ...] | None]:
    assert col.bag is not None
    items = split_items(p, col.bag)
    weights: tuple[float, ...] | None = None
    if col.bag.weighted:
        pairs = [item_weight(t) for t in items]
        bad = next((t for t, pair in zip(items, pairs, strict=True) if pair is None), None)
        if bad is not None:
            raise RowRejected(BAD_WEIGHT, f"{col.name} item {_short(bad)}: expected token:weight")
        items = [pair[0] for pair in pairs]  # type: ignore[index]
        weights = tuple(pair[1] for pair in pairs)  # type: ignore[index]
    for t in items:
        _token(t, col.name)
    return tuple(items), weights


def hour_tokens(p: bytes) -> tuple[bytes, bytes, bytes]:
    """Avazu ``YYMMDDHH`` -> (hour ``HH``, weekday ``%w`` of 20YY-MM-DD with 0 = Sunday, weekend ``1``/``0``)."""
    if not _HOUR_RE.fullmatch(p):
        raise RowRejected(BAD_HOUR, _short(p))
    yy, mm, dd, hh = int(p[0:2]), int(p[2:4]), int(p[4:6]), int(p[6:8])
    if hh > 23:
        raise RowRejected(BAD_HOUR, f"{_short(p)}: hour {hh}")
    try:
        day = datetime.date(2000 + yy, mm, dd)
    except ValueError:
        raise RowRejected(BAD_HOUR, f"{_short(p)}: no such date") from None
    w = (day.weekday() + 1) % 7
    return p[6:8], str(w).encode(), b"1" if w in (6, 0) else b"0"


def parse_line(schema: Schema, line: bytes | str) -> Row:
    """Parse one raw line (terminator optional) of ``schema``; raise :class:`RowRejected` if it is not a row."""
    b = _to_bytes(line)
    if b.endswith(b"\n"):
        b = b[:-1]
    if b.endswith(b"\r"):
        b = b[:-1]
    if b"\x00" in b:
        raise RowRejected(NUL_BYTE)
    if not b.strip():
        raise RowRejected(BLANK)
    libfm = schema.delimiter is None
    parts = b.split() if libfm else b.split(schema.delimiter.encode())  # type: ignore[union-attr]
    if len(parts) != schema.n_columns:
        raise RowRejected(FIELD_COUNT, f"expected {schema.n_columns}, got {len(parts)}")
    if schema.positions is not None:  # the file's header lists the columns in another order
        parts = [parts[i] for i in schema.positions]
    columns = schema.columns
    joined: tuple[bool, ...] = ()
    if schema.joins:  # side tables: their values follow the row's own (docs/data.md#side-tables)
        parts, joined = schema.joined(parts)
        columns = schema.feature_columns
    label = 0.0
    numeric: list[float | None] = []
    tokens: dict[str, bytes] = {}
    bags = []
    for col, p in zip(columns, parts, strict=True):
        kind = col.kind
        if kind == "label":
            label = _label(p, libfm) if schema.label_rule is None else _ruled_label(schema.label_rule, p, col.name)
        elif kind == "categorical":
            if libfm:
                ident, sep, _ = p.partition(b":")
                if not sep or not ident:
                    raise RowRejected(BAD_ITEM, f"{col.name}={_short(p)}")
                p = ident
            tokens[col.name] = _token(p, col.name)
        elif kind == "hex":
            tokens[col.name] = _hex(p, col.name)
        elif kind == "int":
            numeric.append(_int(p, col.name))
        elif kind == "numeric":
            numeric.append(_float(p, col.name))
        elif kind == "hour":
            tokens["hour"], tokens["weekday"], tokens["weekend"] = hour_tokens(p)
        elif kind == "sequence":
            bags.append(_bag(p, col))
    return Row(label, tuple(numeric), tuple(tokens[n] for n in schema.categorical_fields), tuple(bags), joined)


# ------------------------------------------------------------------------------------------- chunk parsing


@dataclass
class ParsedChunk:
    """Accepted rows of a chunk of ``n_lines`` lines as columns (m = accepted rows, in line order).

    ok_idx int64 [m]: line index within the chunk; labels float32 [m]; numeric float64 [m, n_numeric] (NaN =
    missing); categorical: per output categorical field a [m] uint64 (packed) or ``S`` array;
    rejected: (line index, reason, detail) per rejected line, in line order; line_start int64 [n_lines]: byte
    offset of every line within the buffer; bags: per bag column (file order) a :class:`BagColumn` of the m rows;
    joined bool [m, side tables]: whether each row's key was found in each side table.
    """

    n_lines: int
    ok_idx: np.ndarray
    labels: np.ndarray
    numeric: np.ndarray
    categorical: list[np.ndarray]
    rejected: list[tuple[int, str, str]]
    line_start: np.ndarray  # int64 [n_lines]: byte offset of every line within the buffer
    bags: list[BagColumn] = dataclasses.field(default_factory=list)
    joined: np.ndarray = dataclasses.field(default_factory=lambda: np.ones((0, 0), dtype=bool))


def tokens_to_keys(tokens: list[bytes]) -> np.ndarray:
    """Bytes tokens -> uint64 packed keys when all fit in 8 bytes, else an ``S`` array. Shape [n]."""
    width = max((len(t) for t in tokens), default=0)
    arr = np.array(tokens, dtype=f"S{max(width, 1)}")
    if width <= 8:
        return arr.astype("S8").view(">u8").astype(np.uint64)
    return arr


def keys_as_bytes(keys: np.ndarray) -> np.ndarray:
    """uint64 packed keys -> ``S8`` array (``S`` arrays pass through). Shape [n]."""
    if keys.dtype.kind == "S":
        return keys
    return keys.astype(">u8").view("S8")


def concat_keys(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate key arrays, widening packed keys to bytes if any part is an ``S`` array."""
    if any(p.dtype.kind == "S" for p in parts):
        return np.concatenate([keys_as_bytes(p) for p in parts])
    return np.concatenate(parts)


def _rows_to_columns(schema: Schema, idx: list[int], rows: list[Row]) -> tuple[np.ndarray, ...]:
    n_num = len(schema.numeric_fields)
    labels = np.array([r.label for r in rows], dtype=np.float32)
    numeric = np.array([[np.nan if v is None else v for v in r.numeric] for r in rows],
                       dtype=np.float64).reshape(len(rows), n_num)
    cats = [tokens_to_keys([r.categorical[j] for r in rows]) for j in range(len(schema.categorical_fields))]
    return np.array(idx, dtype=np.int64), labels, numeric, cats


def _bag_columns(schema: Schema, rows: list[Row]) -> list[BagColumn]:
    out = []
    for j, col in enumerate(schema.bag_columns):
        bags = [r.bags[j] for r in rows]
        lengths = np.array([len(t) for t, _ in bags], dtype=np.int64)
        keys = tokens_to_keys([tok for t, _ in bags for tok in t])
        weights = np.array([w for _, ws in bags for w in ws or ()], dtype=np.float32) if col.bag.weighted else None  # type: ignore[union-attr]
        out.append(BagColumn(lengths, keys, weights))
    return out


def concat_bags(parts: list[list[BagColumn]]) -> list[BagColumn]:
    """Bag columns of consecutive row blocks, concatenated field by field."""
    if not parts:
        return []
    out = []
    for cols in zip(*parts, strict=True):
        weights = None if cols[0].weights is None else np.concatenate([c.weights for c in cols])  # type: ignore[misc]
        out.append(BagColumn(np.concatenate([c.lengths for c in cols]), concat_keys([c.keys for c in cols]), weights))
    return out


def _parse_rows(schema: Schema, lines: list[bytes], idx: list[int]) -> tuple[list[int], list[Row], list]:
    ok_idx, rows, rejected = [], [], []
    for i, line in zip(idx, lines, strict=True):
        try:
            rows.append(parse_line(schema, line))
            ok_idx.append(i)
        except RowRejected as e:
            rejected.append((i, e.reason, e.detail))
    return ok_idx, rows, rejected


# Buffers are parsed in pieces of about this many bytes (keeps temporaries cache- and allocator-friendly).
PIECE_BYTES = 4 << 20


def parse_chunk(schema: Schema, buf: bytes) -> ParsedChunk:
    """Parse a buffer of whole lines (``\\n``-terminated; a missing final terminator is tolerated)."""
    if len(buf) <= PIECE_BYTES:
        return _parse_piece(schema, buf)
    pieces: list[ParsedChunk] = []
    starts: list[int] = []
    pos = 0
    while pos < len(buf):
        cut = buf.find(b"\n", pos + PIECE_BYTES)
        end = len(buf) if cut < 0 else cut + 1
        pieces.append(_parse_piece(schema, buf[pos:end]))
        starts.append(pos)
        pos = end
    offsets = np.cumsum([0] + [p.n_lines for p in pieces])
    return ParsedChunk(
        n_lines=int(offsets[-1]),
        ok_idx=np.concatenate([p.ok_idx + o for p, o in zip(pieces, offsets, strict=False)]),
        labels=np.concatenate([p.labels for p in pieces]),
        numeric=np.concatenate([p.numeric for p in pieces]),
        categorical=[concat_keys([p.categorical[j] for p in pieces]) for j in range(len(pieces[0].categorical))],
        rejected=[(i + int(o), r, d) for p, o in zip(pieces, offsets, strict=False) for i, r, d in p.rejected],
        line_start=np.concatenate([p.line_start + b for p, b in zip(pieces, starts, strict=True)]),
        bags=concat_bags([p.bags for p in pieces]),
        joined=np.concatenate([p.joined for p in pieces]),
    )


def _parse_piece(schema: Schema, buf: bytes) -> ParsedChunk:
    if buf and not buf.endswith(b"\n"):
        buf += b"\n"
    fmt = FORMATS.get(schema.base_format)
    # The fast parsers read columns at fixed positions: a file whose header reorders them (rare) is parsed per row.
    fast = fmt.fast if fmt is not None and schema.positions is None and not schema.bag_columns and not schema.joins \
        else None
    if fast is not None and schema.delimiter not in (None, chr(fast.delimiter)):  # e.g. Criteo as a header CSV
        fast = None
    if fast is None or not buf:
        lines = buf.split(b"\n")[:-1]
        ok_idx, rows, rejected = _parse_rows(schema, lines, list(range(len(lines))))
        idx, labels, numeric, cats = _rows_to_columns(schema, ok_idx, rows)
        line_start = np.zeros(len(lines), dtype=np.int64)
        if lines:
            line_start[1:] = np.cumsum([len(x) + 1 for x in lines[:-1]])
        joined = np.array([r.joined for r in rows], dtype=bool).reshape(len(rows), len(schema.joins))
        return ParsedChunk(len(lines), idx, labels, numeric, cats, rejected, line_start, _bag_columns(schema, rows),
                           joined)
    f = Fields(buf, fast.delimiter, schema.n_columns, fast.forbid, schema.dropped_label)
    ok, labels, numeric, keys = fast.parse(f)
    fast_idx = f.eligible[ok]
    slow_mask = np.ones(f.n_lines, dtype=bool)
    slow_mask[fast_idx] = False
    slow = np.flatnonzero(slow_mask).tolist()
    starts, ends = f.line_start, f.line_end
    s_ok, s_rows, rejected = _parse_rows(schema, [buf[starts[i]:ends[i]] for i in slow], slow)
    labels, numeric = labels[ok], numeric[ok]
    keys_t = np.ascontiguousarray(keys[ok].T)
    cats = [keys_t[j] for j in range(keys_t.shape[0])]
    if s_rows:
        s_idx, s_labels, s_numeric, s_cats = _rows_to_columns(schema, s_ok, s_rows)
        all_idx = np.concatenate([fast_idx, s_idx])
        order = np.argsort(all_idx, kind="stable")
        fast_idx = all_idx[order]
        labels = np.concatenate([labels, s_labels])[order]
        numeric = np.concatenate([numeric, s_numeric])[order]
        cats = [concat_keys([c, sc])[order] for c, sc in zip(cats, s_cats, strict=True)]
    return ParsedChunk(f.n_lines, fast_idx.astype(np.int64), labels.astype(np.float32), numeric, cats, rejected,
                       f.line_start, joined=np.ones((len(fast_idx), 0), dtype=bool))
