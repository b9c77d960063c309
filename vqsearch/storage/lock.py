"""Single-writer lock: ``fcntl.flock`` on ``<index>/_lock``.

``flock`` locks belong to the open file description, so the kernel drops the lock
when the holding process exits for any reason (including SIGKILL): a crashed
writer never leaves a stale lock behind.  A second writer, in this process or
another, fails immediately with :class:`~vqsearch.errors.Conflict`.  Readers take
no lock.  (``flock`` is not reliable on some network filesystems; use a local
disk for indexes that are written.)
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..errors import Conflict

LOCK_FILE = "_lock"


class WriterLock:
    """An exclusive, non-blocking writer lock on one index directory."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        """Take the lock or raise ``Conflict`` naming the current holder (best effort)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise Conflict(
                f"index at {self.path.parent} is locked by another writer{holder}; "
                "open it with read_only=True or close the other writer"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # Informational only: who holds the lock (never trusted for correctness).
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f" (pid {int(info['pid'])} on {info['host']})"
    except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError):
        return ""
