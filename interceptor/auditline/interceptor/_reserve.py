"""Disk space set aside for a full disk: a preallocated file beside the spool."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["DiskReserve"]


class DiskReserve:
    """Space set aside for a full disk: a preallocated file beside the database."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def hold(self) -> bool:
        """(Re)create the file at full size; False when the disk has no room for it and
        as much again for the events to come (so that holding it is not at once undone)."""
        if self.size <= 0:
            return True
        try:
            if not self.path.exists():
                stat = os.statvfs(self.path.parent)
                if stat.f_bavail * stat.f_frsize < 2 * self.size:
                    return False
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
        except OSError:
            self.release()
            return False
        return True

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
