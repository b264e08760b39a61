"""What a raw input format provides: its :class:`Format` record (registered in :mod:`dlf_torchrec.data.formats`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dlf_torchrec.data.fastparse import FastParser
from dlf_torchrec.data.schema import Schema


@dataclass(frozen=True)
class Format:
    """A raw input format.

    Args:
        name: the ``dataset.format`` value.
        schema: ``(spec, num_fields) -> Schema``; ``spec`` is the format's description (csv: a YAML mapping or path,
            else None), ``num_fields`` the field count of formats without a fixed one (ignored by the others).
        fast: the vectorised parser, or None (every line goes through the reference parser).
        count_fields: for formats without a fixed field count: first data line -> number of fields.
        reads: for aliases, the format whose files this one produces (``synthetic`` -> ``criteo``).
        generate: for generated data: dataset config -> the config reading the raw file it wrote.
        finish: for generated data: (dataset config, preprocessed dir) -> None, run after preprocessing (e.g. the
            synthetic teacher's true probabilities per split).
        is_complete: preprocessed dir -> whether an existing dataset has everything ``finish`` adds (else it is
            generated and preprocessed again).
        numeric: what ``dataset.numeric: auto`` (the default) means for this format's numeric columns.
        header_schema: for formats whose first line gives the columns (RecBole's typed header): ``(spec, first line,
            file name) -> Schema``; then ``schema`` is not used.
    """

    name: str
    schema: Callable[[Any, int | None], Schema]
    fast: FastParser | None = None
    count_fields: Callable[[bytes], int] | None = None
    reads: str | None = None
    generate: Callable[[Any], Any] | None = None
    finish: Callable[[Any, str], None] | None = None
    is_complete: Callable[[str], bool] | None = None
    numeric: str = "bucketize"
    header_schema: Callable[[Any, bytes, str], Schema] | None = None
