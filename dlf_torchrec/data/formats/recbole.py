"""``recbole``: RecBole atomic files (``.inter``, with ``.user`` / ``.item`` as side tables), read directly.

An atomic file is tab-separated; its first line is a typed header, ``name:type`` per column (``user_id:token``,
``class:token_seq``, ``rating:float``). Types: ``token`` -> categorical, ``token_seq`` (items separated by a space)
-> multi-valued (a bag, docs/data.md#multi-valued), ``float`` -> numeric; ``float_seq`` is not read (list the
column under ``skip``). ``dataset.schema`` (a mapping, all keys optional)::

    label: {column: rating, rule: ">= 4"}   # the label column (0/1 values) or a label rule; default: a column `label`
    skip: [timestamp]                       # columns read but not used as features
    sequences: {genre: {max_len: 5, pooling: sum, share_embedding: item_id}}   # token_seq options (no separator)

``.user`` / ``.item`` files are joined by key through ``dataset.side_tables`` (:mod:`dlf_torchrec.data.sidetables`);
their columns come from their own typed headers, with the same ``skip`` and ``sequences``. No vectorised parser.
"""

from __future__ import annotations

from typing import Any

from dlf_torchrec.data.bags import BAG_KEYS, bag_spec
from dlf_torchrec.data.formats.base import Format
from dlf_torchrec.data.formats.csv import label_spec
from dlf_torchrec.data.schema import Column, Schema, SchemaError, line_names

RECBOLE_KEYS = ("label", "skip", "sequences")
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
_SEQ_KEYS = tuple(k for k in BAG_KEYS if k != "separator")


class HeaderError(SchemaError):
    """A RecBole typed header that cannot be read; the message names ``file:1``."""


def recbole_spec(spec: Any) -> dict[str, Any]:
    """Validate ``dataset.schema`` of format recbole (None = all defaults); returns it as a mapping."""
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise SchemaError(f"schema: format recbole expects a mapping (keys {', '.join(RECBOLE_KEYS)}), got {spec!r}")
    unknown = [k for k in spec if k not in RECBOLE_KEYS]
    if unknown:
        raise SchemaError(f"schema: unknown key(s) {unknown} for format recbole (known: {', '.join(RECBOLE_KEYS)})")
    skip = spec.get("skip", [])
    if not isinstance(skip, list) or not all(isinstance(s, str) and s for s in skip):
        raise SchemaError(f"schema.skip: expected a list of column names, got {skip!r}")
    seqs = spec.get("sequences", {})
    if not isinstance(seqs, dict):
        raise SchemaError(f"schema.sequences: expected a mapping of column name -> options, got {seqs!r}")
    for name, opts in seqs.items():
        if not isinstance(opts, dict) or any(k not in _SEQ_KEYS for k in opts):
            raise SchemaError(f"schema.sequences.{name}: expected a mapping with keys among {', '.join(_SEQ_KEYS)} "
                              f"(token_seq items are space-separated), got {opts!r}")
    return spec


def typed_columns(line: bytes, path: str, spec: dict[str, Any], label: str | None) -> list[Column]:
    """The columns of a RecBole typed header ``line`` of file ``path`` (``label``: the label column's name, or None
    for a side table); raises :class:`HeaderError` naming ``path:1``."""
    skip, seqs = set(spec.get("skip", [])), spec.get("sequences", {})
    cols: list[Column] = []
    for i, field in enumerate(line_names(line, "\t")):
        name, sep, typ = field.rpartition(":")
        if not sep or not name:
            raise HeaderError(f"{path}:1: column {i + 1} {field!r}: expected a typed name 'name:type' with type one of "
                              f"{', '.join(RECBOLE_TYPES)} (a RecBole atomic file's header)")
        if typ not in RECBOLE_TYPES:
            raise HeaderError(f"{path}:1: column {field!r}: unknown type {typ!r} (RecBole types: "
                              f"{', '.join(RECBOLE_TYPES)})")
        if any(c.name == name for c in cols):
            raise HeaderError(f"{path}:1: column {name!r} given twice")
        if name == label:
            cols.append(Column(name, "label"))
        elif name in skip:
            cols.append(Column(name, "skip"))
        elif typ == "float_seq":
            raise HeaderError(f"{path}:1: column {field!r}: float_seq is not read; list {name!r} under "
                              f"dataset.schema.skip")
        elif typ == "token_seq":
            cols.append(Column(name, "sequence", bag_spec({"separator": " ", **seqs.get(name, {})},
                                                          f"schema.sequences.{name}")))
        else:
            if name in seqs:
                raise SchemaError(f"schema.sequences.{name}: {path} declares it {typ!r}, not token_seq")
            cols.append(Column(name, "categorical" if typ == "token" else "numeric"))
    return cols


def header_schema(spec: Any, line: bytes, path: str) -> Schema:
    """The schema of a RecBole ``.inter`` file whose first line is ``line``."""
    spec = recbole_spec(spec)
    names = [n.rpartition(":")[0] for n in line_names(line, "\t")]
    label, rule = label_spec(spec.get("label", "label"))
    if not isinstance(label, str) or label not in names:
        raise SchemaError(f"schema.label: {label!r} is not a column of {path} (columns: {', '.join(names)}); name the "
                          f"label column, e.g. label: {{column: rating, rule: \">= 4\"}}")
    cols = typed_columns(line, path, spec, label)
    cat = tuple(c.name for c in cols if c.kind == "categorical")
    return Schema("recbole", tuple(cols), cat, delimiter="\t", header=True, label_rule=rule, typed_header=True)


def _schema(spec: Any, num_fields: int | None) -> Schema:
    raise SchemaError("format recbole reads its columns from the typed header of dataset.train (a .inter file)")


FORMAT = Format("recbole", _schema, header_schema=header_schema, numeric="dense")
