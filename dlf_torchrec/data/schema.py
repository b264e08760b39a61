"""Field specifications of the raw input formats (what each column of a raw line means).

A dataset format is a :class:`Schema` plus a row parser in :mod:`dlf_torchrec.data.parse`; nothing else in the
pipeline knows about formats. A schema lists the raw columns in file order (each a label, a numeric field, a
categorical field, a derived ``hour`` column, or skipped) and the *output* categorical field order.

Built-in schemas:

* ``criteo``: ``label \\t I1..I13 \\t C1..C26`` (40 columns, no header). I-columns are integers (may be empty),
  C-columns 1-8 hex digits (may be empty).
* ``avazu``: Kaggle CSV, 24 columns ``id,click,hour,C1,banner_pos,...,C21``; ``id`` dropped, label ``click``;
  ``hour`` (YYMMDDHH) becomes three categorical fields ``hour`` (chars 6:8), ``weekday`` (%w of 20YY-MM-DD,
  0 = Sunday) and ``weekend`` (1 if weekday in {6, 0}). Output order follows BARS Avazu_x4:
  hour, C1..C21 columns, weekday, weekend. A first line starting with ``id,click`` is a header.
* ``libfm``: ``label id:val id:val ...`` (whitespace separated), label 1/-1 (or 0); every position is a
  categorical field ``f1..fN`` whose token is the id string (the value is ignored). N is detected from the first
  non-blank line or given.
* ``csv``: described by a YAML mapping (``DatasetConfig.schema``)::

      delimiter: ","        # one character, default ","
      header: true          # the first line of every file is a header and is skipped; default false
      label: click          # name of the label column (values 0/1)
      columns:              # every column in file order
        - {name: click, type: label}
        - {name: user, type: categorical}
        - {name: price, type: numeric}
        - {name: note, type: skip}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import yaml

ColumnKind = Literal["label", "numeric", "int", "categorical", "hex", "hour", "skip"]

CRITEO_INT = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CAT = tuple(f"C{i}" for i in range(1, 27))
AVAZU_COLUMNS = (
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain",
    "app_category", "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
    "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)
# Longest categorical token accepted (bytes); longer ones reject the row ("token too long").
MAX_TOKEN_BYTES = 256


class SchemaError(ValueError):
    """A bad csv schema; the message names the offending key."""


@dataclass(frozen=True)
class Column:
    """One raw column. ``kind``: label | numeric (float) | int (integer, Criteo) | categorical (any token) |
    hex (1-8 hex digits, Criteo) | hour (Avazu YYMMDDHH -> hour, weekday, weekend) | skip."""

    name: str
    kind: ColumnKind


@dataclass(frozen=True)
class Schema:
    """Raw columns of one format and the output fields they produce.

    ``delimiter`` None means "any whitespace" (libFM). ``header``: True = first line of each file is a header,
    "auto" = skipped when it starts with ``header_prefix``. Output fields: ``numeric_fields`` (numeric/int
    columns, file order) and ``categorical_fields`` (in output order; may include derived hour fields).
    """

    format: str
    columns: tuple[Column, ...]
    categorical_fields: tuple[str, ...]
    delimiter: str | None = "\t"
    header: bool | Literal["auto"] = False
    header_prefix: bytes = b""

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    @property
    def numeric_fields(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.kind in ("numeric", "int"))

    @property
    def label_index(self) -> int:
        return next(i for i, c in enumerate(self.columns) if c.kind == "label")


def criteo_schema() -> Schema:
    cols = (Column("label", "label"),) + tuple(Column(n, "int") for n in CRITEO_INT) + tuple(
        Column(n, "hex") for n in CRITEO_CAT)
    return Schema("criteo", cols, CRITEO_CAT, delimiter="\t", header=False)


def avazu_schema() -> Schema:
    cols = []
    for name in AVAZU_COLUMNS:
        kind: ColumnKind = {"id": "skip", "click": "label", "hour": "hour"}.get(name, "categorical")  # type: ignore
        cols.append(Column(name, kind))
    cat = ("hour",) + AVAZU_COLUMNS[3:] + ("weekday", "weekend")
    return Schema("avazu", tuple(cols), cat, delimiter=",", header="auto", header_prefix=b"id,click")


def libfm_schema(num_fields: int) -> Schema:
    if num_fields < 1:
        raise SchemaError(f"libfm: need at least one field, got {num_fields}")
    names = tuple(f"f{i}" for i in range(1, num_fields + 1))
    cols = (Column("label", "label"),) + tuple(Column(n, "categorical") for n in names)
    return Schema("libfm", cols, names, delimiter=None, header=False)


_CSV_KEYS = ("delimiter", "header", "label", "columns")
_CSV_TYPES = ("categorical", "numeric", "skip", "label")


def csv_schema(spec: dict[str, Any] | str | os.PathLike[str]) -> Schema:
    """Validate a csv schema (a mapping, or a path to a YAML file holding one); raise :class:`SchemaError`."""
    if isinstance(spec, str | os.PathLike):
        path = str(spec)
        if not os.path.exists(path):
            raise SchemaError(f"schema file not found: {path}")
        with open(path) as f:
            try:
                spec = yaml.safe_load(f)
            except yaml.YAMLError as e:
                raise SchemaError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(spec, dict):
        raise SchemaError(f"schema: expected a mapping, got {type(spec).__name__}")
    unknown = [k for k in spec if k not in _CSV_KEYS]
    if unknown:
        raise SchemaError(f"schema: unknown key(s) {unknown} (known: {', '.join(_CSV_KEYS)})")
    delim = spec.get("delimiter", ",")
    if not isinstance(delim, str) or len(delim) != 1 or delim in "\n\r\x00":
        raise SchemaError(f"schema.delimiter: expected one character (not newline/NUL), got {delim!r}")
    header = spec.get("header", False)
    if not isinstance(header, bool):
        raise SchemaError(f"schema.header: expected true/false, got {header!r}")
    label = spec.get("label")
    if not isinstance(label, str):
        raise SchemaError(f"schema.label: expected the label column's name, got {label!r}")
    raw_cols = spec.get("columns")
    if not isinstance(raw_cols, list) or not raw_cols:
        raise SchemaError("schema.columns: expected a non-empty list of {name, type}")
    cols: list[Column] = []
    seen: set[str] = set()
    for i, c in enumerate(raw_cols):
        key = f"schema.columns[{i}]"
        if not isinstance(c, dict):
            raise SchemaError(f"{key}: expected a mapping {{name, type}}, got {c!r}")
        bad = [k for k in c if k not in ("name", "type")]
        if bad:
            raise SchemaError(f"{key}: unknown key(s) {bad} (known: name, type)")
        name, typ = c.get("name"), c.get("type", "categorical")
        if not isinstance(name, str) or not name:
            raise SchemaError(f"{key}.name: expected a non-empty string, got {name!r}")
        if name in seen:
            raise SchemaError(f"{key}.name: duplicate column name {name!r}")
        seen.add(name)
        if typ not in _CSV_TYPES:
            raise SchemaError(f"{key}.type: expected one of {', '.join(_CSV_TYPES)}, got {typ!r}")
        if name == label:
            typ = "label"
        elif typ == "label":
            raise SchemaError(f"{key}.type: 'label' but schema.label is {label!r}")
        cols.append(Column(name, typ))
    if label not in seen:
        raise SchemaError(f"schema.label: {label!r} is not among the columns {sorted(seen)}")
    cat = tuple(c.name for c in cols if c.kind == "categorical")
    if not cat and not any(c.kind == "numeric" for c in cols):
        raise SchemaError("schema.columns: no categorical or numeric feature column")
    return Schema("csv", tuple(cols), cat, delimiter=delim, header=header)


def schema_for(fmt: str, *, csv_spec: dict[str, Any] | str | None = None, libfm_fields: int | None = None) -> Schema:
    """The schema of a dataset format (``synthetic`` data is Criteo TSV)."""
    if fmt in ("criteo", "synthetic"):
        return criteo_schema()
    if fmt == "avazu":
        return avazu_schema()
    if fmt == "libfm":
        if libfm_fields is None:
            raise SchemaError("libfm: number of fields not given (detect it with parse.detect_libfm_fields)")
        return libfm_schema(libfm_fields)
    if fmt == "csv":
        if csv_spec is None:
            raise SchemaError("csv: dataset.schema is required")
        return csv_schema(csv_spec)
    raise SchemaError(f"unknown format {fmt!r}")
