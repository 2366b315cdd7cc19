"""An exclusive lock on a sidecar file, so that one database has one service.

The operating system drops the lock when its holder dies, however it dies, so a crash
never leaves a stale lock behind. POSIX uses `flock`, Windows `msvcrt.locking`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


class Held(Exception):
    """Another process holds the lock."""


class LockFile:
    """`<path>` locked for this process until `release()`; the file holds the holder's pid."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, path: Path) -> LockFile:
        """Take the lock at once or raise Held; OSError when the file cannot be created."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            raise Held(f"pid {holder}" if holder else "another process") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def release(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        _unlock(fd)
        os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


if sys.platform == "win32":
    import msvcrt

    # msvcrt locks a byte range; a range past the end keeps the pid readable by others.
    _OFFSET = 1 << 20

    def _lock(fd: int) -> None:
        os.lseek(fd, _OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, _OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
