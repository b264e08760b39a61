"""The contract between preprocessing and everything downstream: ``meta.json`` and :class:`FeatureSpec`.

A preprocessed dataset directory looks like::

    meta.json                   this file's content (DatasetMeta)
    vocab.json                  {field: [token, ...]} in id order starting at id 1 (id 0 = PAD, last id = OOV)
    <split>/labels.bin          float32 [rows]
    <split>/sparse.bin          int32   [rows, num_categorical]   row-major, ids in [1, vocab_size - 1]
    <split>/dense.bin           float32 [rows, num_dense]         only when num_dense > 0
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from dlf_torchrec import io

META_FILE = "meta.json"
VOCAB_FILE = "vocab.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CategoricalField:
    name: str
    # Table rows including PAD (id 0) and OOV (id vocab_size - 1).
    vocab_size: int


@dataclass(frozen=True)
class FeatureSpec:
    """What a model needs to know about the features: categorical fields with cardinalities, dense field names."""

    categorical: tuple[CategoricalField, ...]
    dense: tuple[str, ...] = ()

    @property
    def categorical_names(self) -> list[str]:
        return [f.name for f in self.categorical]

    @property
    def num_fields(self) -> int:
        """Tokens per sample: one per categorical field plus one per dense field."""
        return len(self.categorical) + len(self.dense)


@dataclass
class SplitInfo:
    rows: int
    # Rows with label 1 (None in datasets preprocessed before it was recorded).
    positives: int | None = None


@dataclass
class DatasetMeta:
    name: str
    source_format: str
    categorical: list[CategoricalField]
    dense: list[str]
    splits: dict[str, SplitInfo]
    # Row accounting for the whole preprocessing run: rows_read == rows_written + rows_rejected.
    rows_read: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    # The first few rejections as "file:line: reason".
    rejected_examples: list[str] = field(default_factory=list)
    dataset_config: dict[str, Any] = field(default_factory=dict)
    # Fingerprint of each raw input ({"train": {path, size, mtime_ns, sha256 of its first and last MiB}, ...}).
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # How rows were assigned to a random split (data/splits.py SPLIT_RULE); None: splits came from files, or the
    # data predates the record (line byte offsets).
    split_rule: str | None = None
    format_version: int = FORMAT_VERSION

    @property
    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec(categorical=tuple(self.categorical), dense=tuple(self.dense))

    def save(self, directory: str) -> None:
        io.write_json(os.path.join(directory, META_FILE), asdict(self))

    @classmethod
    def load(cls, directory: str) -> DatasetMeta:
        path = os.path.join(directory, META_FILE)
        if not io.exists(path):
            raise FileNotFoundError(f"{path} not found: preprocess the dataset first "
                                    f"(python -m dlf_torchrec.data.preprocess --config <experiment.yaml>)")
        raw = io.read_json(path)
        if raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {raw.get('format_version')} != {FORMAT_VERSION}; "
                             f"re-run preprocessing")
        raw["categorical"] = [CategoricalField(**c) for c in raw["categorical"]]
        raw["splits"] = {k: SplitInfo(**v) for k, v in raw["splits"].items()}
        return cls(**raw)
