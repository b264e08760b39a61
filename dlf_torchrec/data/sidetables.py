"""Side tables: user / item feature files joined to each row by key, the same way at preprocessing and at scoring
(docs/data.md#side-tables). :func:`dataset_schema` is the one place a dataset's raw schema is built, joins included,
for :mod:`~dlf_torchrec.data.preprocess` and :mod:`dlf_torchrec.predict` alike (no train/serve skew).

``dataset.side_tables`` (a list; paths relative to the YAML)::

    - file: users.csv            # csv side table
      key: user_id               # a column of the rows (any type, also skip) and of the side file
      delimiter: ","             # default ","
      header: true               # default true: the first line names the columns (matched by name, any order)
      columns:                   # as csv schema columns (categorical, numeric, sequence, skip); the key listed too
        - {name: user_id}
        - {name: age, type: numeric}
    - file: ml-tiny.item         # format recbole: the side file's typed header gives its columns
      key: item_id

Each side table is read whole into memory (raw key -> the raw values of its feature columns) and checked row by row
as the row parser would (a bad value fails naming ``file:line``); a key given twice or empty fails too. Rows whose key
is not in the table get empty values (categorical: OOV, numeric: missing, sequence: an empty bag), counted per split
in ``meta.json`` (``side_tables``). Files over :data:`MAX_SIDE_TABLE_BYTES` are refused.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from dlf_torchrec.data.bags import check_shares
from dlf_torchrec.data.formats import get_format, recbole
from dlf_torchrec.data.formats.csv import csv_columns
from dlf_torchrec.data.parse import RowRejected, parse_line
from dlf_torchrec.data.reading import DataError, first_nonblank_line, header_order, open_input
from dlf_torchrec.data.schema import Join, Schema, SchemaError

SIDE_KEYS = ("file", "key", "delimiter", "header", "columns")
# A side table is held in memory (about 100 bytes + its text per row, once per preprocessing worker): 1 GiB of file
# at most.
MAX_SIDE_TABLE_BYTES = 1 << 30


@dataclass(frozen=True)
class SideTable:
    """A validated ``dataset.side_tables`` entry: the side file, the key column and the file's schema (no label)."""

    file: str
    key: str
    schema: Schema


def side_tables(raw: list[dict[str, Any]], fmt: str, spec: Any) -> list[SideTable]:
    """Validate ``dataset.side_tables`` of a dataset of format ``fmt`` (``spec``: its ``dataset.schema``)."""
    out = []
    for i, entry in enumerate(raw):
        where = f"dataset.side_tables[{i}]"
        if not isinstance(entry, dict):
            raise SchemaError(f"{where}: expected a mapping {{file, key, ...}}, got {entry!r}")
        known = ("file", "key") if fmt == "recbole" else SIDE_KEYS
        unknown = [k for k in entry if k not in known]
        if unknown:
            raise SchemaError(f"{where}: unknown key(s) {unknown} (known: {', '.join(known)})")
        path, key = entry.get("file"), entry.get("key")
        if not isinstance(path, str) or not path:
            raise SchemaError(f"{where}.file: expected a file path, got {path!r}")
        if not isinstance(key, str) or not key:
            raise SchemaError(f"{where}.key: expected a column name, got {key!r}")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{where}.file: side table not found: {path}")
        if os.path.getsize(path) > MAX_SIDE_TABLE_BYTES:
            raise DataError(f"{path}: {os.path.getsize(path):,} bytes, over the {MAX_SIDE_TABLE_BYTES:,} bytes a side "
                            f"table may hold (it is kept in memory); join it beforehand")
        if fmt == "recbole":
            cols = recbole.typed_columns(first_nonblank_line(path), path, recbole.recbole_spec(spec), None)
            schema = Schema("side", tuple(cols), (), delimiter="\t", header=True, typed_header=True)
        else:
            delim, header = entry.get("delimiter", ","), entry.get("header", True)
            if not isinstance(delim, str) or len(delim) != 1 or delim in "\n\r\x00":
                raise SchemaError(f"{where}.delimiter: expected one character (not newline/NUL), got {delim!r}")
            if not isinstance(header, bool):
                raise SchemaError(f"{where}.header: expected true/false, got {header!r}")
            cols = csv_columns(entry.get("columns"), None, f"{where}.columns")
            for j, c in enumerate(cols):
                if c.bag is not None and c.bag.separator == delim.encode():
                    raise SchemaError(f"{where}.columns[{j}].separator: {delim!r} is also the side table's delimiter")
            schema = Schema("side", tuple(cols), (), delimiter=delim, header=header)
        if key not in [c.name for c in schema.columns]:
            raise SchemaError(f"{where}.key: {key!r} is not a column of {path} "
                              f"(columns: {', '.join(c.name for c in schema.columns)})")
        cats = tuple(c.name for c in schema.columns if c.kind == "categorical")
        out.append(SideTable(path, key, dataclasses.replace(schema, categorical_fields=cats)))
    return out


def load_join(table: SideTable) -> Join:
    """Read side table ``table`` into a :class:`Join`; a bad line fails naming ``file:line``."""
    schema, path = table.schema, table.file
    names = [c.name for c in schema.columns]
    key_idx = names.index(table.key)
    features = ("categorical", "numeric", "sequence")
    keep = [j for j, c in enumerate(schema.columns) if j != key_idx and c.kind in features]
    delim = schema.delimiter.encode()  # type: ignore[union-attr]
    rows: dict[bytes, tuple[bytes, ...]] = {}
    first_at: dict[bytes, int] = {}
    with open_input(path) as f:
        for lineno, line in enumerate(f, start=1):
            if lineno == 1 and schema.header:
                try:
                    schema = header_order(schema, line)
                except DataError as e:
                    raise DataError(f"{path}: {e}") from None
                continue
            try:
                parse_line(schema, line)
            except RowRejected as e:
                raise DataError(f"{path}:{lineno}: {e} (side table rows must all be valid)") from None
            parts = line.rstrip(b"\r\n").split(delim)
            if schema.positions is not None:
                parts = [parts[i] for i in schema.positions]
            key = parts[key_idx]
            if not key:
                raise DataError(f"{path}:{lineno}: empty key {table.key}")
            if key in rows:
                raise DataError(f"{path}:{lineno}: key {table.key}={key.decode('utf-8', 'replace')!r} given twice "
                                f"(first at line {first_at[key]})")
            rows[key] = tuple(parts[j] for j in keep)
            first_at[key] = lineno
    return Join(path, table.key, tuple(schema.columns[j] for j in keep), rows)


def join_side_tables(schema: Schema, tables: list[SideTable]) -> Schema:
    """``schema`` with each side table joined (their feature columns after the row's own)."""
    if not tables:
        return schema
    joins: list[Join] = []
    cats = list(schema.categorical_fields)
    taken = {c.name for c in schema.columns} | set(cats)
    for i, t in enumerate(tables):
        own = {c.name: c.kind for c in schema.columns}
        if t.key not in own or own[t.key] == "label":
            raise SchemaError(f"dataset.side_tables[{i}].key: {t.key!r} is not a feature or skipped column of the rows "
                              f"(columns: {', '.join(own)})")
        clash = [c.name for c in t.schema.columns if c.name != t.key and c.kind != "skip" and c.name in taken]
        if clash:
            raise SchemaError(f"dataset.side_tables[{i}]: column(s) {clash} of {t.file} are also columns of the rows "
                              f"or of an earlier side table (skip them or rename)")
        join = load_join(t)
        taken |= {c.name for c in join.columns}
        cats += [c.name for c in join.columns if c.kind == "categorical"]
        joins.append(join)
    out = dataclasses.replace(schema, joins=tuple(joins), categorical_fields=tuple(cats))
    n_own = len(schema.columns)
    keys = [f"schema.columns[{j}]" for j in range(n_own)] + [
        f"dataset.side_tables[{i}] column {c.name!r}" for i, j in enumerate(joins) for c in j.columns]
    check_shares(list(out.feature_columns), None, keys)
    return out


def dataset_schema(cfg: Any, spec: Any = None, fmt: str | None = None, num_fields: int | None = None) -> Schema:
    """The raw schema of dataset config ``cfg`` with its side tables joined: what preprocessing and scoring parse.

    ``spec`` / ``fmt`` override ``cfg.schema`` / ``cfg.format``; ``num_fields``: the field count of formats without a
    fixed one (default: counted on ``cfg.train``'s first line). RecBole's columns come from ``cfg.train``'s header."""
    name = fmt or cfg.format
    f = get_format(name)
    spec = cfg.schema if spec is None else spec
    if f.header_schema is not None:
        if not cfg.train or not os.path.exists(cfg.train):
            raise FileNotFoundError(f"dataset.train: format {name} reads its columns from this file's typed header, "
                                    f"not found: {cfg.train}")
        schema = f.header_schema(spec, first_nonblank_line(cfg.train), cfg.train)
    else:
        if f.count_fields is not None and num_fields is None and cfg.train and os.path.exists(cfg.train):
            num_fields = f.count_fields(first_nonblank_line(cfg.train))
        schema = f.schema(spec, num_fields)
    return join_side_tables(schema, side_tables(getattr(cfg, "side_tables", None) or [], f.name, spec))
