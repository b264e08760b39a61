"""Reading and writing the product's files (configs, meta, vocabularies, metrics, results, predictions) through
iopath's ``PathManager``, so that a path may later name an object store as well as a local file.

Every complete file is published with one rule (:func:`atomic_open`): local files are written to ``<path>.tmp``
and renamed into place, so a reader never sees a half-written file; on other storage a file appears when it is
closed. Shard memory-mapping and torch.distributed.checkpoint work on local paths and do not go through here.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import IO, Any

import yaml
from iopath.common.file_io import PathManager

_PATHS = PathManager()


def is_local(path: str) -> bool:
    """Whether ``path`` is a local filesystem path (not a ``scheme://`` URI)."""
    return "://" not in path


def open_file(path: str, mode: str = "r") -> IO[Any]:
    """Open ``path`` for reading (or non-atomic writing/appending)."""
    return _PATHS.open(path, mode)


def exists(path: str) -> bool:
    return _PATHS.exists(path)


def makedirs(path: str) -> None:
    """Create directory ``path`` and its parents (no error if it exists)."""
    _PATHS.mkdirs(path)


def remove(path: str) -> None:
    """Delete file ``path`` if it exists."""
    if _PATHS.exists(path):
        _PATHS.rm(path)


def read_text(path: str) -> str:
    with open_file(path, "r") as f:
        return f.read()


def read_json(path: str) -> Any:
    with open_file(path, "r") as f:
        return json.load(f)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[IO[Any]]:
    """A file to write ``path`` through (``mode`` ``w`` or ``wb``): it appears at ``path`` only when the block
    completes; on an exception the partial file is removed and ``path`` keeps its previous content."""
    if not is_local(path):  # object stores publish an object when its upload completes
        with _PATHS.open(path, mode) as f:
            yield f
        return
    tmp = path + ".tmp"
    try:
        with open(tmp, mode) as f:
            yield f
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=indent))


def write_yaml(path: str, obj: Any) -> None:
    """Write ``obj`` as YAML (keys in insertion order) to ``path`` atomically."""
    write_text(path, yaml.safe_dump(obj, sort_keys=False))
