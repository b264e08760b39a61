"""``csv``: any delimited file, described by a YAML mapping (``DatasetConfig.schema``)::

      delimiter: ","        # one character, default ","
      header: true          # the first line of every file is a header, matched to columns by name; default false
      label: click          # name of the label column (values 0/1), or a label rule (docs/data.md#label-rules):
                            #   {column: rating, rule: ">= 4"}          1 where the number compares true, else 0
                            #   {column: answer, map: {"yes": 1, "no": 0}}   listed values only
      columns:              # every column in file order
        - {name: click, type: label}
        - {name: user, type: categorical}
        - {name: price, type: numeric}
        - {name: note, type: skip}
        - {name: history, type: sequence, separator: "^", max_len: 50, pooling: mean, share_embedding: item}
        - {name: tags, type: sequence, separator: "|", weighted: true}    # items "token:weight", pooled by sum

``sequence`` (multi-valued) keys, all optional: ``separator`` (default ``^``), ``max_len`` (keep the last N items),
``pooling`` (``mean``, or ``sum``; weighted bags default to ``sum``), ``weighted`` (default false),
``share_embedding`` (a categorical or sequence column whose table and vocabulary this bag uses); see
:mod:`dlf_torchrec.data.bags` and docs/data.md#multi-valued.

No vectorised parser: every line goes through the reference parser.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from dlf_torchrec import io
from dlf_torchrec.data.bags import BAG_KEYS, bag_spec, check_shares
from dlf_torchrec.data.formats.base import Format
from dlf_torchrec.data.schema import LABEL_OPS, Column, LabelRule, Schema, SchemaError

_CSV_KEYS = ("delimiter", "header", "label", "columns")
_CSV_TYPES = ("categorical", "numeric", "sequence", "skip", "label")
_RULE_RE = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*")


def _threshold(rule: Any) -> LabelRule:
    match = _RULE_RE.fullmatch(rule) if isinstance(rule, str) else None
    if match is None:
        raise SchemaError(f"schema.label.rule: expected '<op> <number>' (quoted in YAML) with op one of "
                          f"{', '.join(LABEL_OPS)}, e.g. '>= 4'; got {rule!r}")
    return LabelRule(op=match.group(1), threshold=float(match.group(2)))


def _value_map(mapping: Any) -> LabelRule:
    if not isinstance(mapping, dict) or not mapping:
        raise SchemaError(f"schema.label.map: expected a mapping of raw values to 0/1, got {mapping!r}")
    pairs: dict[bytes, float] = {}
    for key, value in mapping.items():
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise SchemaError(f"schema.label.map: key {key!r} is not a string (YAML reads yes/no/on/off/true/false "
                              f"as booleans: quote them, e.g. \"yes\": 1)")
        if isinstance(value, bool) or value not in (0, 1):
            raise SchemaError(f"schema.label.map.{key}: expected 0 or 1, got {value!r}")
        raw = str(key).encode("utf-8")
        if raw in pairs:
            raise SchemaError(f"schema.label.map: value {str(key)!r} given twice")
        pairs[raw] = float(value)
    if set(pairs.values()) != {0.0, 1.0}:
        raise SchemaError(f"schema.label.map: needs values labelled 1 and values labelled 0, got {mapping!r}")
    return LabelRule(mapping=tuple(pairs.items()))


def label_spec(spec: Any) -> tuple[Any, LabelRule | None]:
    """``schema.label`` -> (label column name, its rule or None); the name is checked by the caller."""
    if not isinstance(spec, dict):
        return spec, None
    unknown = [k for k in spec if k not in ("column", "rule", "map")]
    if unknown:
        raise SchemaError(f"schema.label: unknown key(s) {unknown} (known: column, rule, map)")
    if ("rule" in spec) == ("map" in spec):
        raise SchemaError("schema.label: give exactly one of rule (e.g. '>= 4') or map (e.g. {\"yes\": 1, \"no\": 0})")
    return spec.get("column"), _threshold(spec["rule"]) if "rule" in spec else _value_map(spec["map"])


def csv_columns(raw_cols: Any, label: str | None, prefix: str) -> list[Column]:
    """Validate a list of csv column mappings ``{name, type, ...}`` (``prefix``: its key, for errors); the column
    named ``label`` (if any) becomes the label. Side tables (:mod:`dlf_torchrec.data.sidetables`) reuse it."""
    if not isinstance(raw_cols, list) or not raw_cols:
        raise SchemaError(f"{prefix}: expected a non-empty list of {{name, type}}")
    cols: list[Column] = []
    seen: set[str] = set()
    for i, c in enumerate(raw_cols):
        key = f"{prefix}[{i}]"
        if not isinstance(c, dict):
            raise SchemaError(f"{key}: expected a mapping {{name, type}}, got {c!r}")
        name, typ = c.get("name"), c.get("type", "categorical")
        known = ("name", "type") + (BAG_KEYS if typ == "sequence" else ())
        bad = [k for k in c if k not in known]
        if bad:
            hint = "" if typ == "sequence" or not set(bad) & set(BAG_KEYS) else "; those are keys of type: sequence"
            raise SchemaError(f"{key}: unknown key(s) {bad} (known: {', '.join(known)}){hint}")
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
        cols.append(Column(name, typ, bag_spec(c, key) if typ == "sequence" else None))
    return cols


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
    label, rule = label_spec(spec.get("label"))
    if not isinstance(label, str) or not label:
        key = "schema.label.column" if isinstance(spec.get("label"), dict) else "schema.label"
        raise SchemaError(f"{key}: expected the label column's name, got {label!r}")
    cols = csv_columns(spec.get("columns"), label, "schema.columns")
    check_shares(cols, delim)
    if label not in {c.name for c in cols}:
        raise SchemaError(f"schema.label: {label!r} is not among the columns {sorted(c.name for c in cols)}")
    cat = tuple(c.name for c in cols if c.kind == "categorical")
    if not cat and not any(c.kind in ("numeric", "sequence") for c in cols):
        raise SchemaError("schema.columns: no categorical, sequence or numeric feature column")
    return Schema("csv", tuple(cols), cat, delimiter=delim, header=header, label_rule=rule)


def _schema(spec: Any, num_fields: int | None) -> Schema:
    if spec is None:
        raise SchemaError("csv: dataset.schema is required")
    return csv_schema(spec)


FORMAT = Format("csv", _schema, numeric="dense")
