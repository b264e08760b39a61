"""What preprocessed data was built from: the dataset section and each raw input's fingerprint, recorded in
``meta.json`` and compared on reuse, so that changed inputs or settings are never silently served stale."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from dlf_torchrec.config import DatasetConfig
from dlf_torchrec.data.meta import DatasetMeta
from dlf_torchrec.data.splits import SPLIT_RULE

INPUT_KEYS = ("train", "valid", "test")
# Keys that do not change the preprocessed data (inputs are compared by fingerprint, not by how the path is spelled).
_UNCHECKED_KEYS = {"progress", "chunk_rows", "output_dir", "max_bad_fraction", *INPUT_KEYS}
FINGERPRINT_BYTES = 1 << 20


def input_fingerprint(path: str) -> dict[str, Any]:
    """Absolute path, size, mtime and the SHA-256 of the first and last MiB of a raw input file."""
    st = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(FINGERPRINT_BYTES))
        if st.st_size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, st.st_size - FINGERPRINT_BYTES))
            digest.update(f.read())
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256_first_last_mib": digest.hexdigest()}


def input_fingerprints(cfg: DatasetConfig, resolve: Any) -> dict[str, dict[str, Any]]:
    """Fingerprint of every raw input of ``cfg``; ``resolve(path, key)`` turns a config path into a file path."""
    out = {key: input_fingerprint(resolve(getattr(cfg, key), key)) for key in INPUT_KEYS if getattr(cfg, key)}
    for i, table in enumerate(cfg.side_tables):  # a side table's content is part of the data too
        if isinstance(table, dict) and isinstance(table.get("file"), str):
            out[f"side_tables[{i}]"] = input_fingerprint(resolve(table["file"], f"side_tables[{i}].file"))
    return out


def stale_reasons(cfg: DatasetConfig, resolve: Any) -> list[str]:
    """Why ``cfg.output_dir`` does not hold ``cfg``'s preprocessed data (empty: it does).

    Compared: the dataset section (minus keys that do not change the data), the random split rule (when the split
    is random) and, except for generated synthetic data, each raw input's fingerprint."""
    try:
        meta = DatasetMeta.load(cfg.output_dir)
    except (OSError, ValueError, TypeError, KeyError) as e:
        return [f"meta.json unreadable ({e})"]
    old = {k: v for k, v in meta.dataset_config.items() if k not in _UNCHECKED_KEYS}
    # As meta.json holds it (a JSON round trip: e.g. a label map's integer keys become strings).
    new = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(cfg))).items() if k not in _UNCHECKED_KEYS}
    reasons = [f"dataset.{k} was {old.get(k)!r}, now {new.get(k)!r}" for k in sorted(old.keys() | new.keys())
               if old.get(k) != new.get(k)]
    random_split = not (cfg.valid or cfg.test)
    if random_split and meta.split_rule != SPLIT_RULE:
        reasons.append(f"random split rule was {meta.split_rule or 'line byte offset'!r}, now {SPLIT_RULE!r}")
    if cfg.format != "synthetic":  # synthetic raw data is a function of the config, generated into output_dir
        recorded = meta.inputs
        for key, current in input_fingerprints(cfg, resolve).items():
            before = recorded.get(key)
            if before is None:
                reasons.append(f"dataset.{key}: no fingerprint recorded")
            elif before != current:
                diff = ", ".join(k for k in current if before.get(k) != current[k])
                reasons.append(f"dataset.{key} {current['path']}: {diff} changed")
        reasons += [f"dataset.{key} removed" for key in recorded if key in INPUT_KEYS and not getattr(cfg, key)]
    return reasons
