"""``csv``: any delimited file, described by a YAML mapping (``DatasetConfig.schema``)::

      delimiter: ","        # one character, default ","
      header: true          # the first line of every file is a header, matched to columns by name; default false
      label: click          # name of the label column (values 0/1)
      columns:              # every column in file order
        - {name: click, type: label}
        - {name: user, type: categorical}
        - {name: price, type: numeric}
        - {name: note, type: skip}

No vectorised parser: every line goes through the reference parser.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from dlf_torchrec import io
from dlf_torchrec.data.formats.base import Format
from dlf_torchrec.data.schema import Column, Schema, SchemaError

_CSV_KEYS = ("delimiter", "header", "label", "columns")
_CSV_TYPES = ("categorical", "numeric", "skip", "label")


def csv_schema(spec: dict[str, Any] | str | os.PathLike[str]) -> Schema:
    """Validate a csv schema (a mapping, or a path to a YAML file holding one); raise :class:`SchemaError`."""
    if isinstance(spec, str | os.PathLike):
        path = str(spec)
        if not io.exists(path):
            raise SchemaError(f"schema file not found: {path}")
        try:
            spec = yaml.safe_load(io.read_text(path))
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


def _schema(spec: Any, num_fields: int | None) -> Schema:
    if spec is None:
        raise SchemaError("csv: dataset.schema is required")
    return csv_schema(spec)


FORMAT = Format("csv", _schema)
