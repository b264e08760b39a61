"""Reading and writing the product's files (configs, meta, vocabularies, metrics, results, predictions): local paths
with the standard library, ``scheme://`` URIs (``s3://bucket/prefix``, ``gs://``, ``memory://``, ...) with fsspec.

fsspec rather than iopath: torch.distributed.checkpoint's object-store writer and reader (``FsspecWriter`` /
``FsspecReader``) are fsspec, so one filesystem layer, one set of credentials (s3fs reads the standard ``AWS_*``
variables and ``~/.aws``, like every AWS client) and one error type serve checkpoints and every other file.

Every complete file is published with one rule (:func:`atomic_open`): local files are written to ``<path>.tmp``
and renamed into place, so a reader never sees a half-written file; an object store publishes an object when its
upload completes (a PUT is atomic: the old object or the new one, never a mix). A URI never carries credentials
(``s3://key:secret@bucket`` is refused), so every path this package prints is safe to log.

Memory mapping needs local files: a preprocessed dataset on an object store is staged to a local cache directory
(:func:`stage_dir`, :func:`cache_dir`); TensorBoard event files are written locally and uploaded (:func:`upload_files`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import urlsplit

import yaml

CACHE_ENV = "DLF_TORCHREC_CACHE"
# Filesystems with buckets: a missing bucket is an error, never created (fsspec's makedirs would create it).
_BUCKET_PROTOCOLS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss"}


class StorageError(OSError):
    """An object-store operation failed; the message names the URI (never credentials)."""


def is_local(path: str) -> bool:
    """Whether ``path`` is a local filesystem path (not a ``scheme://`` URI)."""
    return "://" not in path


def _fs(path: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) of URI ``path``; listings are never cached (other ranks and processes
    write the same prefixes)."""
    if "@" in urlsplit(path).netloc:
        raise StorageError(f"{urlsplit(path).scheme}://...: credentials in a URI are refused; use the standard "
                           f"environment or config (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws)")
    import fsspec

    try:
        return fsspec.core.url_to_fs(path, use_listings_cache=False)
    except (ImportError, ValueError) as e:
        raise StorageError(f"{path}: unsupported URI ({e})") from None


@contextlib.contextmanager
def _named(path: str) -> Iterator[None]:
    """Re-raise an object store's error as one line naming ``path`` (a missing object stays FileNotFoundError)."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path}: {e.strerror or e}") from None
    except (OSError, ValueError) as e:
        raise StorageError(f"{path}: {type(e).__name__}: {e}") from None


def open_file(path: str, mode: str = "r") -> IO[Any]:
    """Open ``path`` for reading (or non-atomic writing; appending only locally, see :func:`append_text`)."""
    if is_local(path):
        return open(path, mode)
    fs, p = _fs(path)
    with _named(path):
        return fs.open(p, mode)


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.exists(path)
    fs, p = _fs(path)
    with _named(path):
        return fs.exists(p)


def makedirs(path: str) -> None:
    """Create directory ``path`` and its parents (no error if it exists). On an object store (no directories) this
    checks that the bucket exists: a missing bucket fails here, in one line naming ``path``."""
    if is_local(path):
        os.makedirs(path, exist_ok=True)
        return
    fs, p = _fs(path)
    with _named(path):
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        if _BUCKET_PROTOCOLS.intersection(protocols):
            bucket = p.split("/", 1)[0]
            if not fs.exists(bucket):
                raise FileNotFoundError(f"bucket {bucket!r} does not exist (or is not visible with these credentials)")
        else:
            fs.makedirs(p, exist_ok=True)


def remove(path: str) -> None:
    """Delete file ``path`` if it exists."""
    if is_local(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    fs, p = _fs(path)
    with _named(path), contextlib.suppress(FileNotFoundError):
        fs.rm_file(p)


def rmtree(path: str) -> None:
    """Delete directory (prefix) ``path`` and everything under it, if it exists."""
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    fs, p = _fs(path)
    with _named(path), contextlib.suppress(FileNotFoundError):
        fs.rm(p, recursive=True)


def listdir(path: str) -> list[str]:
    """Names (not paths) of the entries directly under ``path``; empty when it does not exist."""
    if is_local(path):
        return os.listdir(path) if os.path.isdir(path) else []
    fs, p = _fs(path)
    with _named(path):
        try:
            return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(p, detail=False))
        except FileNotFoundError:
            return []


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


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
        fs, p = _fs(path)
        with _named(path), fs.open(p, mode) as f:
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


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


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


def append_text(path: str, text: str) -> None:
    """Append ``text`` to ``path``. Objects cannot be appended to: on an object store the whole object is read and
    written again (one atomic PUT; meant for small logs such as ``metrics.jsonl``, one line per event)."""
    if is_local(path):
        with open(path, "a") as f:
            f.write(text)
        return
    try:
        old = read_text(path)
    except FileNotFoundError:
        old = ""
    write_text(path, old + text)


# ------------------------------------------------------------------------------ local copies of remote files


def cache_dir() -> str:
    """Local directory for copies of object-store data: ``$DLF_TORCHREC_CACHE``, else
    ``$XDG_CACHE_HOME/dlf_torchrec`` (``~/.cache/dlf_torchrec``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get(CACHE_ENV) or os.path.join(base, "dlf_torchrec")


def cache_path(kind: str, uri: str) -> str:
    """The local path under :func:`cache_dir` that stands for ``uri`` (``kind``: datasets, locks, tensorboard)."""
    name = uri.rstrip("/").rsplit("/", 1)[-1] or "root"
    return os.path.join(cache_dir(), kind, f"{name}-{hashlib.sha256(uri.encode()).hexdigest()[:16]}")


@contextlib.contextmanager
def exclusive_lock(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on local file ``path`` (created with its parents if missing) for the block."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_or_none(path: str) -> bytes | None:
    try:
        return read_bytes(path)
    except FileNotFoundError:
        return None


def stage_dir(uri: str, marker: str) -> str:
    """A local copy of directory ``uri`` (an object-store prefix) that is current; returns its path.

    The copy lives at ``cache_path("datasets", uri)`` and is current while its ``marker`` file (``meta.json``, the
    last file a dataset's writer publishes) is byte-identical to the remote one; otherwise it is downloaded again
    into ``<copy>.partial`` and renamed into place (the marker last). When ``uri`` has no marker yet, the copy's
    marker is removed, so the copy never looks ready. Processes of one host stage one copy, under a file lock.
    """
    local = cache_path("datasets", uri)
    with exclusive_lock(local + ".lock"):
        remote_marker = _read_or_none(f"{uri}/{marker}")
        if remote_marker is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(local, marker))
            os.makedirs(local, exist_ok=True)
            return local
        if _read_or_none(os.path.join(local, marker)) == remote_marker:
            return local
        partial = local + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        fs, root = _fs(uri)
        with _named(uri):
            for name in fs.find(root):
                rel = name[len(root.rstrip("/")) + 1:]
                if rel != marker:
                    os.makedirs(os.path.dirname(os.path.join(partial, rel)), exist_ok=True)
                    fs.get_file(name, os.path.join(partial, rel))
        if _read_or_none(f"{uri}/{marker}") != remote_marker:
            raise StorageError(f"{uri}: changed while it was being copied to {local}; run again")
        with open(os.path.join(partial, marker), "wb") as f:
            f.write(remote_marker)
        shutil.rmtree(local, ignore_errors=True)
        os.replace(partial, local)
    return local


def publish_dir(local: str, uri: str, marker: str, skip: tuple[str, ...] = ()) -> None:
    """Upload directory ``local`` to ``uri`` so that a reader never takes a half-uploaded copy for a complete one:
    the remote ``marker`` is deleted first and uploaded last; remote files the local copy lacks are deleted.
    Top-level entries named in ``skip`` are neither uploaded nor deleted."""
    fs, root = _fs(uri)
    root = root.rstrip("/")
    files = []
    for d, dirs, names in os.walk(local):
        rel_dir = os.path.relpath(d, local)
        if rel_dir == ".":
            dirs[:] = [n for n in dirs if n not in skip]
        files += [os.path.normpath(os.path.join(rel_dir, n)) for n in names
                  if not (rel_dir == "." and (n in skip or n == marker))]
    with _named(uri):
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(f"{root}/{marker}")
        for name in fs.find(root):
            rel = name[len(root) + 1:]
            if rel.split("/", 1)[0] not in skip and rel not in files:
                fs.rm_file(name)
        for rel in files:
            fs.put_file(os.path.join(local, rel), f"{root}/{rel}")
        fs.put_file(os.path.join(local, marker), f"{root}/{marker}")


def upload_files(local: str, uri: str) -> None:
    """Copy the files directly under directory ``local`` to ``uri`` (each replaces its object atomically)."""
    fs, root = _fs(uri)
    with _named(uri):
        for name in sorted(os.listdir(local)):
            if os.path.isfile(os.path.join(local, name)):
                fs.put_file(os.path.join(local, name), f"{root.rstrip('/')}/{name}")
