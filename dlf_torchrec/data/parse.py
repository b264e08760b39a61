"""Raw lines -> typed rows, or a rejection with a reason.

Two entry points with identical semantics:

* :func:`parse_line` (reference, per row): ``bytes | str -> Row``; raises :class:`RowRejected` (and nothing else)
  for any input. Used for libfm/csv, for single rows and as the slow path of the chunk parser.
* :func:`parse_chunk` (vectorised): a buffer of whole lines -> :class:`ParsedChunk` of numpy columns. Criteo and
  Avazu rows are validated and decoded with numpy on the whole chunk; only lines the fast path cannot accept
  (malformed, or unusual such as tokens longer than 8 bytes) go through :func:`parse_line`, so the reasons and line
  indices of rejections always come from the reference parser.

Row rules (all formats): the line terminator (``\\n``, ``\\r\\n``) is removed; a NUL byte rejects the line
("nul byte"); a line of only whitespace is a "blank line"; a wrong number of columns is "wrong field count".
Empty values are allowed and mean missing. Column rules:

* label: ``0``/``1`` (libFM: ``1``/``+1`` -> 1, ``-1``/``0`` -> 0), else "bad label".
* int (Criteo I1..I13): ``-?[0-9]+``, else "non-integer in int field"; more than 18 digits: "int out of range".
* numeric (csv): a decimal float (``[+-]?digits[.digits][e[+-]digits]``), finite, else "non-numeric in numeric field".
* hex (Criteo C1..C26): 1-8 hex digits, else "non-hex categorical id".
* categorical: any bytes up to ``MAX_TOKEN_BYTES`` (else "token too long"); libFM items must be ``id:value`` with a
  non-empty id, else "bad libfm item" (the value is ignored, the token is the id).
* hour (Avazu): ``YYMMDDHH`` with a real date 20YY-MM-DD and HH <= 23, else "bad hour".

Categorical tokens are bytes (``b""`` = missing). In :class:`ParsedChunk` a categorical column is either a uint64
array of *packed* tokens (tokens of at most 8 bytes, big-endian, zero padded: order-preserving, 0 = missing) or,
when some token is longer, a numpy ``S`` array (``b""`` = missing).
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass

import numpy as np

from dlf_torchrec.data.schema import MAX_TOKEN_BYTES, Schema

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
REASONS = (BLANK, FIELD_COUNT, NON_INT, INT_RANGE, NON_NUMERIC, NON_HEX, BAD_LABEL, BAD_HOUR, BAD_ITEM,
           TOKEN_TOO_LONG, NUL_BYTE, BAD_INPUT)

# Lines longer than this always take the per-row path (bounds the fast path's per-column memory).
MAX_FAST_LINE = 1024


class RowRejected(ValueError):
    """A raw line that is not a valid row. ``reason`` is one of :data:`REASONS`; ``detail`` says where/what."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Row:
    """One parsed row: ``label`` in {0., 1.}, ``numeric`` per numeric column (None = missing), ``categorical``
    tokens in ``schema.categorical_fields`` order (``b""`` = missing)."""

    label: float
    numeric: tuple[float | None, ...]
    categorical: tuple[bytes, ...]


_INT_RE = re.compile(rb"-?[0-9]+")
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


def _int(p: bytes, name: str) -> float | None:
    if not p:
        return None
    if not _INT_RE.fullmatch(p):
        raise RowRejected(NON_INT, f"{name}={_short(p)}")
    if len(p) - (p[:1] == b"-") > 18:
        raise RowRejected(INT_RANGE, f"{name}={_short(p)}")
    return float(int(p))


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
    label = 0.0
    numeric: list[float | None] = []
    tokens: dict[str, bytes] = {}
    for col, p in zip(schema.columns, parts, strict=True):
        kind = col.kind
        if kind == "label":
            label = _label(p, libfm)
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
    return Row(label, tuple(numeric), tuple(tokens[n] for n in schema.categorical_fields))


def detect_libfm_fields(line: bytes | str) -> int:
    """Number of feature positions of a libFM line (items after the label)."""
    return max(len(_to_bytes(line).split()) - 1, 0)


# ------------------------------------------------------------------------------------------- chunk parsing


@dataclass
class ParsedChunk:
    """Accepted rows of a chunk of ``n_lines`` lines as columns (m = accepted rows, in line order).

    ok_idx int64 [m]: line index within the chunk; labels float32 [m]; numeric float64 [m, n_numeric] (NaN =
    missing); categorical: per output categorical field a [m] uint64 (packed) or ``S`` array;
    rejected: (line index, reason, detail) per rejected line, in line order; line_start int64 [n_lines]: byte
    offset of every line within the buffer.
    """

    n_lines: int
    ok_idx: np.ndarray
    labels: np.ndarray
    numeric: np.ndarray
    categorical: list[np.ndarray]
    rejected: list[tuple[int, str, str]]
    line_start: np.ndarray  # int64 [n_lines]: byte offset of every line within the buffer


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


def _parse_rows(schema: Schema, lines: list[bytes], idx: list[int]) -> tuple[list[int], list[Row], list]:
    ok_idx, rows, rejected = [], [], []
    for i, line in zip(idx, lines, strict=True):
        try:
            rows.append(parse_line(schema, line))
            ok_idx.append(i)
        except RowRejected as e:
            rejected.append((i, e.reason, e.detail))
    return ok_idx, rows, rejected


_HEX_LUT = np.zeros(256, dtype=bool)
for _c in b"0123456789abcdefABCDEF":
    _HEX_LUT[_c] = True
_HEX_LUT[0] = True  # zero padding beyond the token (NUL bytes inside lines never reach the fast path)
_ONES8 = np.uint64(0x0101010101010101)
_ASCII0 = np.uint64(0x3030303030303030)
_HI_NIB = np.uint64(0xF0F0F0F0F0F0F0F0)
_SIX = np.uint64(0x0606060606060606)
# _MASK[l]: keeps the first l bytes of a left-aligned (big-endian) 8-byte window; l >= 8 keeps all.
_MASK = np.array([0] + [((1 << (8 * n)) - 1) << (8 * (8 - n)) for n in range(1, 9)] + [(1 << 64) - 1],
                 dtype=np.uint64)
# _ZFILL[l]: ASCII '0' in the 8 - l high bytes (right-aligned number of l digits gets leading zeros).
_ZFILL = np.array([0x3030303030303030 & ~((1 << (8 * n)) - 1) for n in range(9)], dtype=np.uint64)


class _Fields:
    """Field boundaries of the lines of a buffer that have exactly ``n_cols`` delimited fields (eligible lines)
    and packed 8-byte windows of fields."""

    def __init__(self, buf: bytes, delim: int, n_cols: int, forbid: bytes = b"") -> None:
        a = np.frombuffer(buf, dtype=np.uint8)
        seps = np.flatnonzero((a == delim) | (a == 10))
        nl_k = np.flatnonzero(a[seps] == 10)  # index into seps of each line end
        n = len(nl_k)
        nl = seps[nl_k]
        start = np.empty(n, dtype=np.int64)
        start[:1] = 0
        start[1:] = nl[:-1] + 1
        short = nl - start <= MAX_FAST_LINE
        regular = len(seps) == n * n_cols and bool(np.all(nl_k == np.arange(n_cols - 1, len(seps), n_cols)))
        forbid += b"\x00"
        has_forbidden = any(c in buf for c in (forbid[i:i + 1] for i in range(len(forbid))))
        if regular and not has_forbidden and bool(short.all()):
            ei = np.arange(n)
            end = seps.reshape(n, n_cols)
        else:
            fields = np.diff(nl_k, prepend=-1)
            elig = (fields == n_cols) & short
            if has_forbidden:
                bad = np.isin(a, np.frombuffer(forbid, dtype=np.uint8))
                elig[np.searchsorted(nl, np.flatnonzero(bad))] = False
            ei = np.flatnonzero(elig)
            end = seps[nl_k[ei][:, None] - (n_cols - 1) + np.arange(n_cols)]
        if b"\r" in buf:  # a CR right before the newline belongs to the terminator, not to the last field
            cr = a[np.maximum(nl[ei] - 1, 0)] == 13
            end = end.copy()
            end[:, -1] -= cr & (nl[ei] > start[ei])
        beg = np.empty_like(end)
        beg[:, 0] = start[ei]
        beg[:, 1:] = end[:, :-1] + 1
        self.n_lines = n
        self.line_start, self.line_end = start, nl
        self.eligible = ei
        self.beg, self.len = beg, end - beg
        padded = buf + b"\x00" * 8
        # 8-byte big-endian windows starting at every byte offset (unaligned strided view, no copy).
        self._win = np.ndarray((len(buf) + 1,), dtype=">u8", buffer=padded, strides=(1,))

    def window(self, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """Packed first 8 bytes of the given fields, zeroed beyond the field: (uint64 [m, k], lengths [m, k])."""
        beg, ln = self.beg[:, cols], self.len[:, cols]
        w = self._win[beg].astype(np.uint64)
        return w & _MASK[np.minimum(ln, 9)], ln


def _label01(f: _Fields, col: int) -> tuple[np.ndarray, np.ndarray]:
    k, ln = f.window(slice(col, col + 1))
    c = (k[:, 0] >> np.uint64(56)).astype(np.int64)
    return (ln[:, 0] == 1) & ((c == 48) | (c == 49)), (c - 48).astype(np.float32)


def _swar_ints(k: np.ndarray, ln: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Packed ``-?[0-9]{1,8}`` fields -> (valid bool, value float64 with NaN for empty). Longer ones are invalid."""
    neg = (k >> np.uint64(56)) == 45
    k2 = np.where(neg, k << np.uint64(8), k)
    l2 = ln - neg
    ok = (ln <= 8) & ((ln == 0) | (l2 >= 1))
    l2c = np.clip(l2, 0, 8)
    r = k2 >> np.minimum(8 * (8 - l2c), 63).astype(np.uint64)
    v = r | _ZFILL[l2c]
    ok &= ((v & _HI_NIB) == _ASCII0) & (((v + _SIX) & _HI_NIB) == _ASCII0)
    d = v - _ASCII0
    d = ((d >> np.uint64(8)) & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(10) + (d & np.uint64(0x00FF00FF00FF00FF))
    d = ((d >> np.uint64(16)) & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(100) + (
        d & np.uint64(0x0000FFFF0000FFFF))
    d = (d >> np.uint64(32)) * np.uint64(10000) + (d & np.uint64(0xFFFFFFFF))
    val = d.astype(np.float64)
    val = np.where(neg, -val, val)
    return ok, np.where(ln == 0, np.nan, val)


def _hex_ok(k: np.ndarray, ln: np.ndarray) -> np.ndarray:
    """[m, j] packed fields -> bool [m]: every field is empty or 1-8 hex digits."""
    kc = np.ascontiguousarray(k)
    flags = _HEX_LUT[kc.view(np.uint8)].view(np.uint64).reshape(k.shape)
    return ((flags == _ONES8) & (ln <= 8)).all(1)


def _fast_criteo(f: _Fields) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ok, labels = _label01(f, 0)
    ik, il = f.window(slice(1, 14))
    iok, numeric = _swar_ints(ik, il)
    ok &= iok.all(1)
    ck, cl = f.window(slice(14, 40))
    ok &= _hex_ok(ck, cl)
    return ok, labels, numeric, ck


def _fast_avazu(f: _Fields) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ok, labels = _label01(f, 1)
    hk, hl = f.window(slice(2, 3))
    hb = hk[:, 0].astype(">u8").view(np.uint8).reshape(-1, 8).astype(np.int64)
    ok &= (hl[:, 0] == 8) & ((hb >= 48) & (hb <= 57)).all(-1)
    d = hb - 48
    yy, mm, dd, hh = d[:, 0] * 10 + d[:, 1], d[:, 2] * 10 + d[:, 3], d[:, 4] * 10 + d[:, 5], d[:, 6] * 10 + d[:, 7]
    ok &= (mm >= 1) & (mm <= 12) & (hh <= 23) & (dd >= 1)
    months = (30 + yy) * 12 + np.clip(mm - 1, 0, 11)  # months since 1970-01
    first_day = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    next_first = (months + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    ok &= dd <= next_first - first_day
    weekday = (first_day + dd - 1 + 4) % 7  # 1970-01-01 was a Thursday (%w = 4)
    ck, cl = f.window(slice(3, 24))
    ok &= (cl <= 8).all(1)
    hour_key = (hb[:, 6].astype(np.uint64) << np.uint64(56)) | (hb[:, 7].astype(np.uint64) << np.uint64(48))
    wd_key = (weekday + 48).astype(np.uint64) << np.uint64(56)
    we_key = np.where((weekday == 6) | (weekday == 0), 49, 48).astype(np.uint64) << np.uint64(56)
    keys = np.concatenate([hour_key[:, None], ck, wd_key[:, None], we_key[:, None]], axis=1)
    return ok, labels, np.zeros((len(ok), 0), dtype=np.float64), keys


def _fast_libfm(f: _Fields) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
    keys = ik & _MASK[pos]
    return ok, labels, np.zeros((len(ok), 0), dtype=np.float64), keys


_FAST = {"criteo": (_fast_criteo, 9, b""), "avazu": (_fast_avazu, 44, b""), "libfm": (_fast_libfm, 32, b"\t\x0b\x0c\r")}


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
    )


def _parse_piece(schema: Schema, buf: bytes) -> ParsedChunk:
    if buf and not buf.endswith(b"\n"):
        buf += b"\n"
    fast = _FAST.get(schema.format)
    if fast is None or not buf:
        lines = buf.split(b"\n")[:-1]
        ok_idx, rows, rejected = _parse_rows(schema, lines, list(range(len(lines))))
        idx, labels, numeric, cats = _rows_to_columns(schema, ok_idx, rows)
        line_start = np.zeros(len(lines), dtype=np.int64)
        if lines:
            line_start[1:] = np.cumsum([len(x) + 1 for x in lines[:-1]])
        return ParsedChunk(len(lines), idx, labels, numeric, cats, rejected, line_start)
    fn, delim, forbid = fast
    f = _Fields(buf, delim, schema.n_columns, forbid)
    ok, labels, numeric, keys = fn(f)
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
                       f.line_start)
