"""Reading experiment YAML files: ``defaults:`` includes, deep merge, input paths relative to the file that sets
them, and which file set each key (for error messages). :mod:`dlf_torchrec.config` turns the merged tree into typed,
validated dataclasses."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from dlf_torchrec.errors import ConfigError


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``top`` over ``base``: mappings merge key by key, anything else replaces. A ``model`` section naming
    another model replaces the base's model section whole (its keys belong to another config class)."""
    out = dict(base)
    for key, value in top.items():
        old = out.get(key)
        same_model = key != "model" or not isinstance(old, dict) or not isinstance(value, dict) \
            or value.get("name", old.get("name")) == old.get("name")
        out[key] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) and same_model else value
    return out


def _leaves(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        keys.extend(_leaves(value, full) if isinstance(value, dict) and value else [full])
    return keys


def read_config_tree(path: Path, origins: dict[str, str] | None = None, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read an experiment YAML with its ``defaults:`` includes resolved.

    ``defaults: [base.yaml, ...]`` (paths relative to the including file) are read first, in order, each with its
    own includes, and merged; the file's own keys are merged last. ``origins`` (if given) receives, for every leaf
    key, the file that set it last (for error messages).
    """
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"{path}: defaults: include cycle ({' -> '.join(str(p) for p in (*_seen, path))})")
    if not path.exists():
        raise ConfigError(f"{_seen[-1] if _seen else 'config'}: file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    includes = raw.pop("defaults", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{path}: defaults: expected a list of YAML paths, got {includes!r}")
    _rebase_inputs(raw, path.parent)
    tree: dict[str, Any] = {}
    for include in includes:
        tree = _merge(tree, read_config_tree(path.parent / include, origins, (*_seen, path)))
    if origins is not None:
        origins.update({key: str(path) for key in _leaves(raw)})
    return _merge(tree, raw)


def _rebase_inputs(raw: dict[str, Any], base: Path) -> None:
    """Relative input paths set in a YAML file are relative to that file (command-line overrides: to the cwd)."""
    dataset = raw.get("dataset")
    for key in ("train", "valid", "test", "schema") if isinstance(dataset, dict) else ():
        if isinstance(dataset.get(key), str) and dataset[key] and not os.path.isabs(dataset[key]):
            dataset[key] = os.path.normpath(base / dataset[key])
    tables = dataset.get("side_tables") if isinstance(dataset, dict) else None
    for table in tables if isinstance(tables, list) else ():
        if isinstance(table, dict) and isinstance(table.get("file"), str) and table["file"] \
                and not os.path.isabs(table["file"]):
            table["file"] = os.path.normpath(base / table["file"])


def origin_of(message: str, origins: dict[str, str]) -> str | None:
    """The file that set the key an error message starts with ("unknown key 'a.b'", "a.b[0]: ...")."""
    match = re.match(r"(?:unknown key ')?([A-Za-z_][\w.]*)", message)
    if not match:
        return None
    key = match.group(1)
    while key:
        if key in origins:
            return origins[key]
        found = [f for k, f in origins.items() if k.startswith(key + ".")]
        if len(set(found)) == 1:
            return found[0]
        key = key.rpartition(".")[0]
    return None
