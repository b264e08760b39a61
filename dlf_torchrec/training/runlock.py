"""One run per output directory: an advisory lock file ``<output_dir>/run.lock``, taken by rank 0.

The lock is an ``fcntl.flock`` on the file, so the kernel releases it when the holder dies, however it dies; the
file's content (pid, host, start time) names the holder for the second run's message. A file left behind by a
holder that did not release it (SIGKILL, power loss) is a stale lock: the next run reports it and takes over.

An object store has no such lock (an object outlives a killed holder, and nothing can tell a dead holder from a
live one on another host), so for an ``s3://`` (or other URI) output directory the lock is host-local: the same
file, kept under :func:`dlf_torchrec.io.cache_path` ``("locks", uri)``. It keeps two runs on one host out of one
prefix; runs on two hosts are not detected, which :meth:`RunLock.acquire` says in one line on stderr.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Any

from dlf_torchrec import io

LOCK_FILE = "run.lock"


class RunDirLocked(RuntimeError):
    """Another live run holds the output directory."""


def _describe(owner: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("time", 0)))
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, started {started}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


class RunLock:
    """``with RunLock(dir):`` holds ``dir/run.lock`` for the block; raises :class:`RunDirLocked` if it is held."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.remote = not io.is_local(directory)
        self._lock_dir = io.cache_path("locks", directory) if self.remote else directory
        self.path = os.path.join(self._lock_dir, LOCK_FILE)
        self._fd: int | None = None

    def _read_owner(self) -> dict[str, Any]:
        try:
            with open(self.path) as f:
                owner = json.load(f)
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def _lock_file(self) -> int:
        """An fd holding the flock of the file now at ``self.path`` (a releasing holder unlinks it: retry)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirLocked(f"{self.directory} is in use by another run ({_describe(self._read_owner())}): "
                                   f"wait for it to finish or set another training.output_dir") from None
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def acquire(self) -> None:
        os.makedirs(self._lock_dir, exist_ok=True)
        if self.remote:
            print(f"[dlf_torchrec] run lock of {self.directory} is host-local ({self.path}): an object store has no "
                  f"lock, so a run into the same prefix from another host is not detected", file=sys.stderr)
        fd = self._lock_file()
        previous = self._read_owner()
        if previous:  # we hold the lock, so its last holder is gone without releasing it
            alive = previous.get("host") == socket.gethostname() and _pid_alive(int(previous.get("pid", -1)))
            state = "whose pid is still alive (reused?)" if alive else "that is no longer running"
            print(f"[dlf_torchrec] stale lock {self.path} from a run {state} ({_describe(previous)}); taking over",
                  file=sys.stderr)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it: a waiting run never sees our content as stale
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
