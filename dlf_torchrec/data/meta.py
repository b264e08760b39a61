"""The contract between preprocessing and everything downstream: ``meta.json`` and :class:`FeatureSpec`.

A preprocessed dataset directory looks like::

    meta.json                   this file's content (DatasetMeta)
    vocab.json                  {field: [token, ...]} in id order starting at id 1 (id 0 = PAD, last id = OOV)
    <split>/labels.bin          float32 [rows]
    <split>/sparse.bin          int32   [rows, num_categorical]   row-major, ids in [1, vocab_size - 1]
    <split>/dense.bin           float32 [rows, num_dense]         only when num_dense > 0
    <split>/bag<j>.lengths.bin  int32   [rows]                    bag field j (meta ``bags`` order): items per row
    <split>/bag<j>.values.bin   int32   [items]                   its ids, row after row (``SplitInfo.bag_values[j]``)
    <split>/bag<j>.weights.bin  float32 [items]                   only for weighted bags

``bags`` and ``bag_values`` are left out of ``meta.json`` when a dataset has no bag fields (its meta.json is then
byte for byte what it was before bag fields existed).
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
class BagField:
    """A multi-valued field: ``table`` is the field whose table it looks up (itself, or its ``share_embedding``
    field), ``vocab_size`` that table's rows; ``pooling`` sum | mean; ``weighted``: items carry weights."""

    name: str
    vocab_size: int
    table: str
    pooling: str = "mean"
    weighted: bool = False


@dataclass(frozen=True)
class FeatureSpec:
    """What a model needs to know about the features: categorical fields with cardinalities, dense field names,
    multi-valued (bag) fields."""

    categorical: tuple[CategoricalField, ...]
    dense: tuple[str, ...] = ()
    bags: tuple[BagField, ...] = ()

    @property
    def categorical_names(self) -> list[str]:
        return [f.name for f in self.categorical]

    @property
    def sparse_names(self) -> list[str]:
        """The KeyedJaggedTensor keys, in order: the categorical fields, then the bag fields."""
        return [f.name for f in self.categorical] + [b.name for b in self.bags]

    @property
    def weighted(self) -> bool:
        """Whether batches carry per-item weights (some bag field is weighted)."""
        return any(b.weighted for b in self.bags)

    @property
    def num_fields(self) -> int:
        """Tokens per sample: one per categorical field, one per bag field and one per dense field."""
        return len(self.categorical) + len(self.bags) + len(self.dense)


@dataclass
class SplitInfo:
    rows: int
    # Rows with label 1 (None in datasets preprocessed before it was recorded).
    positives: int | None = None
    # Items stored per bag field (meta ``bags`` order); None when the dataset has no bag fields.
    bag_values: list[int] | None = None


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
    # Multi-valued fields (docs/data.md#multi-valued), after the categorical ones in model input order.
    bags: list[BagField] = field(default_factory=list)
    # Side tables joined by key (docs/data.md#side-tables): file, key, columns, rows, and per split the rows whose
    # key the table lacks ("unmatched"); left out of meta.json when there are none.
    side_tables: list[dict[str, Any]] = field(default_factory=list)

    @property
    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec(categorical=tuple(self.categorical), dense=tuple(self.dense), bags=tuple(self.bags))

    def save(self, directory: str) -> None:
        raw = asdict(self)
        if not self.bags:  # a dataset without bag fields keeps its meta.json bytes
            del raw["bags"]
            for info in raw["splits"].values():
                del info["bag_values"]
        if not self.side_tables:
            del raw["side_tables"]
        io.write_json(os.path.join(directory, META_FILE), raw)

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
        raw["bags"] = [BagField(**b) for b in raw.get("bags", [])]
        return cls(**raw)
