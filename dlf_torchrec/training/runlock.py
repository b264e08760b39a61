"""One run per output directory: an advisory lock file ``<output_dir>/run.lock``, taken by rank 0.

The lock is an ``fcntl.flock`` on the file, so the kernel releases it when the holder dies, however it dies; the
file's content (pid, host, start time) names the holder for the second run's message. A file left behind by a
holder that did not release it (SIGKILL, power loss) is a stale lock: the next run reports it and takes over.
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
        self.path = os.path.join(directory, LOCK_FILE)
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
        os.makedirs(self.directory, exist_ok=True)
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
