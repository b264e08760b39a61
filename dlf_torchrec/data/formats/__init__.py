"""The table of raw input formats: name -> :class:`~dlf_torchrec.data.formats.base.Format`.

Adding a format is one module here (its schema, optionally a vectorised parser) plus one line in :data:`FORMATS`;
preprocessing, scoring (:mod:`dlf_torchrec.predict`) and the chunk parser look formats up only through this table.
(The config's ``dataset.format`` choices in :mod:`dlf_torchrec.config` list the names once more for validation.)
"""

from __future__ import annotations

from typing import Any

from dlf_torchrec.data.formats import avazu, criteo, csv, libfm, recbole, synthetic
from dlf_torchrec.data.formats.base import Format
from dlf_torchrec.data.schema import Schema, SchemaError

FORMATS: dict[str, Format] = {f.name: f for f in (
    criteo.FORMAT,
    avazu.FORMAT,
    libfm.FORMAT,
    csv.FORMAT,
    recbole.FORMAT,
    synthetic.FORMAT,
)}


def get_format(name: str) -> Format:
    """The format registered as ``name``, or the format whose files an alias reads (``synthetic`` -> criteo)."""
    fmt = FORMATS.get(name)
    if fmt is None:
        raise SchemaError(f"unknown format {name!r}")
    return FORMATS[fmt.reads] if fmt.reads else fmt


def raw_format(name: str) -> str:
    """The name of the format whose raw files ``name`` produces (synthetic data is Criteo TSV)."""
    return get_format(name).name


def file_formats() -> tuple[str, ...]:
    """Formats of raw files (not aliases), in registry order: what ``predict --format`` accepts."""
    return tuple(n for n, f in FORMATS.items() if not f.reads)


def schema_for(fmt: str, *, spec: Any = None, num_fields: int | None = None) -> Schema:
    """The schema of format ``fmt``. ``spec``: the format's description (csv: a mapping or a YAML path);
    ``num_fields``: the field count of formats that have no fixed one (libFM; ignored by the others)."""
    return get_format(fmt).schema(spec, num_fields)


def default_numeric(name: str) -> str:
    """What ``dataset.numeric: auto`` means for format ``name``: ``bucketize`` or ``dense`` (docs/data.md)."""
    fmt = FORMATS.get(name)
    return fmt.numeric if fmt is not None else "bucketize"
