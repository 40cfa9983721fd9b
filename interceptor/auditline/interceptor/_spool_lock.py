"""`SpoolLock`: one writer per spool. Two processes writing one spool would number
their events alike; the lock (an `flock`, which the kernel lets go of when its holder
exits, even by `kill -9`) makes a second one wait, then refuse."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from auditline.interceptor._types import PlainStartError

__all__ = ["SpoolInUseError", "SpoolLock"]


class SpoolInUseError(PlainStartError, RuntimeError):
    """Another process holds the spool (a second server on one data directory). Its
    message names only the spool's directory."""


class SpoolLock:
    """Held from construction until `release`."""

    poll_interval = 0.05

    def __init__(self, path: Path, *, timeout: float) -> None:
        """Take the lock at `path`, waiting up to `timeout` seconds for a holder to let
        go of it (an audit worker whose serving process died, finishing its last
        commit); raise `SpoolInUseError` after that."""
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self._fd)
                    self._fd = None
                    raise SpoolInUseError(
                        f"the audit spool {path.parent} is in use by another process"
                    ) from None
                time.sleep(self.poll_interval)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing lets go of the flock
            self._fd = None
