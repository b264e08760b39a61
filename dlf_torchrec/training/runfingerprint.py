"""A resumed run is the same run: ``<output_dir>/run_fingerprint.json`` records what a run is, and a resume under
anything else is refused.

The fingerprint is the resolved config (flattened to dotted keys) minus :data:`RESUMABLE`, the keys a resume may
change (how long it trains, where it writes, how it is executed and reports), plus the preprocessed data it reads:
each raw input's size and content hash and each split's row count (from ``meta.json``). Paths and mtimes are left
out of the data part: a dataset copied elsewhere is the same data; a changed ``dataset.train`` *string* still shows
as a config difference.
"""

from __future__ import annotations

import os
from typing import Any

from dlf_torchrec import io
from dlf_torchrec.config import ConfigError, ExperimentConfig
from dlf_torchrec.data.meta import DatasetMeta

FILE = "run_fingerprint.json"
# Dotted keys (or prefixes ending in ".") that a resume may change.
RESUMABLE = (
    "training.epochs", "training.output_dir", "training.progress", "training.num_workers", "training.resume",
    "training.force_resume", "training.device", "training.cpu_allocator", "training.keep_checkpoints",
    "training.checkpoint_every_steps", "training.evaluate_test", "training.group_auc_field",
    "dataset.output_dir", "dataset.progress", "dataset.chunk_rows", "dataset.max_bad_fraction",
    # Any world size and plan reads the checkpoint (docs/reliability.md), so the sharding may change too.
    "sharding.",
)


class ResumeMismatch(ConfigError):
    """The output directory holds a run with another config or other data."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def _resumable(key: str) -> bool:
    return any(key == r or (r.endswith(".") and key.startswith(r)) for r in RESUMABLE)


def run_fingerprint(cfg: ExperimentConfig, meta: DatasetMeta) -> dict[str, Any]:
    """{dotted key: value} of everything a resume must not change: config keys and ``data.*`` entries."""
    out = {k: v for k, v in _flatten(cfg.to_dict()).items() if not _resumable(k)}
    for name, fp in sorted(meta.inputs.items()):
        out[f"data.{name}.size"] = fp.get("size")
        out[f"data.{name}.sha256_first_last_mib"] = fp.get("sha256_first_last_mib")
    for name, split in sorted(meta.splits.items()):
        out[f"data.{name}.rows"] = split.rows
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def default_fingerprint(model_name: str) -> dict[str, Any]:
    """The fingerprint keys' default values (model keys: those of ``model_name``)."""
    from dlf_torchrec.config import build_config

    return _flatten(build_config({"model": {"name": model_name}}).to_dict())


def differences(old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any] | None = None) -> list[str]:
    """``key old -> new`` for each key whose value differs (a key only on one side counts as a difference), except
    a key the old fingerprint lacks whose new value is its default in ``defaults``: a run recorded by a version
    before that key existed ran as its default does."""
    missing, defaults = object(), defaults or {}
    return [f"{k} {_short(old[k]) if k in old else '(absent)'} -> {_short(new[k]) if k in new else '(absent)'}"
            for k in sorted(old.keys() | new.keys()) if old.get(k, missing) != new.get(k, missing)
            and not (k not in old and k in defaults and new.get(k, missing) == defaults[k])]


def check_or_record(cfg: ExperimentConfig, meta: DatasetMeta, resuming: bool) -> None:
    """Rank 0, before training: refuse a resume whose fingerprint differs from the recorded one; record it otherwise.

    ``resuming``: a checkpoint will be loaded. A fresh run (nothing to resume) records its own fingerprint; a run
    directory written before fingerprints existed is recorded without a check. ``training.force_resume`` resumes
    anyway and records the new fingerprint.

    Raises:
        ResumeMismatch: one line naming the output directory and the differing keys, and how to proceed.
    """
    path = os.path.join(cfg.training.output_dir, FILE)
    current = run_fingerprint(cfg, meta)
    if resuming and io.exists(path) and not cfg.training.force_resume:
        diff = differences(io.read_json(path), current, default_fingerprint(cfg.to_dict()["model"]["name"]))
        if diff:
            shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
            raise ResumeMismatch(
                f"{cfg.training.output_dir} holds a run with another config or data ({shown}): use a new "
                f"training.output_dir, or set training.force_resume=true to continue it under the new settings")
    io.write_json(path, current, indent=1)
