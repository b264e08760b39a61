"""Raw input to be scored: header and label-column detection, and a pass-through id column.

Labels: ``auto`` looks at the first data line (the first of the head lines with a plausible column count): the
schema's column count means labelled (the label is parsed and ignored), one column fewer means unlabelled (e.g.
Criteo's ``test.txt``, 39 columns; Avazu's ``test`` without ``click``). ``yes``/``no`` force it.
"""

from __future__ import annotations

from typing import Literal

from dlf_torchrec.data.reading import DataError, header_order
from dlf_torchrec.data.schema import Schema

LabelMode = Literal["auto", "yes", "no"]


class RawInputError(ValueError):
    """The input does not fit the format (column count, id column)."""


def skip_header(schema: Schema, head: list[bytes]) -> tuple[list[bytes], int]:
    """(``head`` without its header line, 1-based line number of its first line): the first line is a header when
    it is one under the labelled or the unlabelled variant of ``schema``."""
    if head and (schema.is_header(head[0]) or schema.without_label().is_header(head[0])):
        return head[1:], 2
    return head, 1


def first_data_line(schema: Schema, lines: list[bytes]) -> bytes | None:
    """The first line of ``lines`` with the labelled or unlabelled column count of ``schema`` (so that a malformed
    first row does not decide), else the first non-blank line, else None."""
    counts = (schema.n_columns, schema.n_columns - 1)
    return next((line for line in lines if schema.count_columns(line) in counts),
                next((line for line in lines if line.strip()), None))


def input_schema(schema: Schema, first_line: bytes | None, label: LabelMode, header: bytes | None = None) -> Schema:
    """``schema`` or its unlabelled variant, as ``label`` says or (auto) as the first data line's column count says;
    with a ``header`` line, in the column order the header names (:func:`~dlf_torchrec.data.reading.header_order`)."""
    chosen = _label_variant(schema, first_line, label)
    if header is None:
        return chosen
    try:
        return header_order(chosen, header)
    except DataError as e:
        raise RawInputError(str(e)) from None


def _label_variant(schema: Schema, first_line: bytes | None, label: LabelMode) -> Schema:
    if label == "yes":
        return schema
    if label == "no":
        return schema.without_label()
    if first_line is None:
        return schema
    n = schema.count_columns(first_line)
    if n == schema.n_columns - 1:
        return schema.without_label()
    if n != schema.n_columns:
        raise RawInputError(f"first data line has {n} columns; {schema.format} expects {schema.n_columns} "
                            f"(labelled) or {schema.n_columns - 1} (unlabelled)")
    return schema


def column_index(schema: Schema, name: str | None) -> int | None:
    """File position of raw column ``name`` of ``schema`` (None when no id column is wanted)."""
    if name is None:
        return None
    names = [c.name for c in schema.columns]
    if name not in names or schema.delimiter is None:
        raise RawInputError(f"--id-column {name!r}: not a column of {schema.format} (columns: {', '.join(names)})")
    index = names.index(name)
    return index if schema.positions is None else schema.positions[index]


def id_values(lines: list[bytes], schema: Schema, column: int) -> list[str]:
    """Column ``column`` of every raw line ('' where the line has fewer columns)."""
    out = []
    for line in lines:
        parts = line.rstrip(b"\r\n").split(schema.delimiter.encode() if schema.delimiter else None)
        out.append(parts[column].decode("utf-8", "replace") if column < len(parts) else "")
    return out
