"""How the spool's writer wakes the audit worker's loop (`_worker_process`)."""

from __future__ import annotations

import contextlib
import os

__all__ = ["WriteWake"]


class WriteWake:
    """The spool's writer wakes the worker's loop after each write while a round waits
    for its events' commit (rather than the loop looking every few ms: ~500 wake-ups a
    second under load). A pipe, so that the loop waits for it and the serving process
    at once."""

    def __init__(self) -> None:
        self.fd, self._write = os.pipe()  # the loop waits for `fd`
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write, False)
        self.waiting = False  # set by the loop, read by the writer thread

    def written(self) -> None:
        if self.waiting:
            # Full: the loop wakes anyway. Closed: a writer that outlived the close.
            with contextlib.suppress(OSError):
                os.write(self._write, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 4096)

    def close(self) -> None:
        self.waiting = False
        os.close(self.fd)
        os.close(self._write)
