"""What each column of a raw line means: :class:`Schema` (shared by every input format).

A schema lists the raw columns in file order (each a label, a numeric field, a categorical field, a derived
``hour`` column, or skipped) and the *output* categorical field order. The schemas of the built-in formats are
built in :mod:`dlf_torchrec.data.formats` (one module per format, one registry line each).
"""

from __future__ import annotations

import codecs
import dataclasses
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

ColumnKind = Literal["label", "numeric", "int", "categorical", "hex", "hour", "sequence", "skip"]

# Longest categorical token accepted (bytes); longer ones reject the row ("token too long").
MAX_TOKEN_BYTES = 256
# Format-name suffix of the unlabelled variant of a schema (:meth:`Schema.without_label`).
UNLABELLED = "_unlabelled"


class SchemaError(ValueError):
    """A bad schema or an unknown format; the message names the offending key."""


def line_names(line: bytes, delimiter: str | None, typed: bool = False) -> list[str]:
    """The names of a header ``line``: its fields, trimmed of spaces and of a UTF-8 byte-order mark; ``typed``:
    without their ``:type`` suffix (RecBole's ``user_id:token``)."""
    fields = line.removeprefix(codecs.BOM_UTF8).rstrip(b"\r\n").split(delimiter.encode() if delimiter else None)
    names = [f.decode("utf-8", "replace").strip() for f in fields]
    return [n.rpartition(":")[0] or n for n in names] if typed else names


@dataclass(frozen=True)
class BagSpec:
    """How a multi-valued (``sequence``) column becomes a bag of ids (docs/data.md#multi-valued).

    ``separator`` splits the value into items (empty items are dropped; an empty value is an empty bag);
    ``max_len`` keeps the *last* ``max_len`` items (None: all); ``pooling`` sum | mean; ``weighted``: items are
    ``token:weight`` pairs; ``share_embedding``: the field whose table (and vocabulary) this bag looks up (None: its
    own table)."""

    separator: bytes = b"^"
    max_len: int | None = None
    pooling: Literal["sum", "mean"] = "mean"
    weighted: bool = False
    share_embedding: str | None = None


@dataclass(frozen=True)
class Column:
    """One raw column. ``kind``: label | numeric (float) | int (integer, Criteo) | categorical (any token) |
    hex (1-8 hex digits, Criteo) | hour (Avazu YYMMDDHH -> hour, weekday, weekend) | sequence (a bag of tokens,
    ``bag`` says how) | skip."""

    name: str
    kind: ColumnKind
    bag: BagSpec | None = None


# Comparisons a threshold label rule may use (csv ``label: {column, rule: ">= 4"}``).
LABEL_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq, "!=": operator.ne}


@dataclass(frozen=True)
class LabelRule:
    """How a label column's raw value becomes 0/1 (docs/data.md#label-rules): a threshold (``op``, ``threshold``:
    label 1 where ``value op threshold`` holds, 0 where not) or a value map (``mapping``: raw bytes -> 0/1). Values
    outside the rule (not a number; not in the map) reject the row."""

    op: str = ""
    threshold: float = 0.0
    mapping: tuple[tuple[bytes, float], ...] = ()

    def holds(self, value: float) -> bool:
        return LABEL_OPS[self.op](value, self.threshold)


@dataclass(frozen=True)
class Join:
    """A side table joined to each row by key (docs/data.md#side-tables): the row's raw value of column ``key``
    (any column of the row, also a skipped one) is looked up in ``rows`` (raw key -> the raw values of ``columns``,
    held in memory); a missing key gives empty values (categorical: OOV, numeric: missing, sequence: empty bag).
    ``file``: the side table's path (for messages)."""

    file: str
    key: str
    columns: tuple[Column, ...]
    rows: dict[bytes, tuple[bytes, ...]] = dataclasses.field(compare=False, hash=False, repr=False)

    def values(self, key: bytes) -> tuple[bytes, ...] | None:
        """The side values of raw key ``key``, or None when the table has no such key."""
        return self.rows.get(key)


@dataclass(frozen=True)
class Schema:
    """Raw columns of one format and the output fields they produce.

    ``delimiter`` None means "any whitespace" (libFM). ``header``: True = first line of each file is a header,
    "auto" = a first line that starts with ``header_prefix`` (when given) or names exactly the schema's columns,
    in any order, is a header. Output fields: ``numeric_fields`` (numeric/int
    columns, file order) and ``categorical_fields`` (in output order; may include derived hour fields).
    ``positions``: for a file whose header lists the columns in another order, the file position of each column
    (None = file order is ``columns`` order; set by :func:`dlf_torchrec.data.reading.header_order`).
    ``label_rule``: how the label column's values map to 0/1 (None: the values are ``0``/``1``).
    ``joins``: side tables joined to each row by key; their columns follow the row's own (``feature_columns``).
    ``typed_header``: header names carry a ``:type`` suffix (RecBole atomic files), ignored when matching by name.
    ``dropped_label``: set by :meth:`without_label`, the position the removed label column had in ``base_format``'s
    lines (the format's fast parser reads the lines as if that column held ``0``).
    """

    format: str
    columns: tuple[Column, ...]
    categorical_fields: tuple[str, ...]
    delimiter: str | None = "\t"
    header: bool | Literal["auto"] = False
    header_prefix: bytes = b""
    positions: tuple[int, ...] | None = None
    label_rule: LabelRule | None = None
    joins: tuple[Join, ...] = ()
    typed_header: bool = False
    dropped_label: int | None = None

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    @property
    def feature_columns(self) -> tuple[Column, ...]:
        """The row's own columns, then each joined side table's (the order of the output fields)."""
        return self.columns + tuple(c for j in self.joins for c in j.columns)

    @property
    def numeric_fields(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.feature_columns if c.kind in ("numeric", "int"))

    @property
    def bag_columns(self) -> tuple[Column, ...]:
        """The multi-valued (``sequence``) columns, file order then side tables: the output bag fields."""
        return tuple(c for c in self.feature_columns if c.kind == "sequence")

    @property
    def base_format(self) -> str:
        """The format whose lines this schema reads: ``format`` without the unlabelled variant's suffix."""
        return self.format.removesuffix(UNLABELLED) if self.dropped_label is not None else self.format

    @property
    def label_index(self) -> int:
        return next(i for i, c in enumerate(self.columns) if c.kind == "label")

    def count_columns(self, line: bytes) -> int:
        """Number of raw columns of ``line`` under this schema's delimiter."""
        line = line.rstrip(b"\r\n")
        return len(line.split()) if self.delimiter is None else len(line.split(self.delimiter.encode()))

    def is_header(self, line: bytes) -> bool:
        """Whether ``line`` (the first line of a file) is a header under this schema's header rule."""
        if self.header is True:
            return True
        if self.header != "auto":
            return False
        if self.header_prefix and line.startswith(self.header_prefix):
            return True
        return sorted(line_names(line, self.delimiter, self.typed_header)) == sorted(c.name for c in self.columns)

    def joined(self, parts: list[bytes]) -> tuple[list[bytes], tuple[bool, ...]]:
        """A row's raw values (schema order) followed by each side table's values for its key; and per side table
        whether the key was found (a missing key gives empty values)."""
        names = [c.name for c in self.columns]
        found = []
        for j in self.joins:
            values = j.values(parts[names.index(j.key)])
            found.append(values is not None)
            parts = parts + list(values if values is not None else (b"",) * len(j.columns))
        return parts, tuple(found)

    def without_label(self) -> Schema:
        """The variant for unlabelled input: the label column removed (rows parse with label 0, ignored)."""
        columns = tuple(c for c in self.columns if c.kind != "label")
        prefix = self.header_prefix
        if prefix and self.delimiter:  # e.g. Avazu "id,click" -> "id,hour"
            prefix = self.delimiter.join(c.name for c in columns[:2]).encode()
        return dataclasses.replace(self, columns=columns, format=f"{self.format}{UNLABELLED}", header_prefix=prefix,
                                   positions=None, dropped_label=self.label_index)
