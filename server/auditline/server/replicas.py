"""What a replica learns from the others: the state they share is in the database, and
most of it is read there on every call (accounts, sessions and their revocation,
login failures and blocks, buckets, permissions), so it is the same on every replica
at once. Two things are also *running* state on each replica, applied from the
database every `--state-poll-interval` seconds by `StateFollower`: the audit target
(where the default exporter writes, and which logs are kept) and the exporters
defined through `ExporterService` (started, restarted or stopped as their rows say).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

__all__ = ["StateFollower"]

log = logging.getLogger("auditline.server")


class StateFollower:
    """Runs each step every `interval` seconds until stopped (0: never)."""

    def __init__(self, *, interval: float, steps: Sequence[Callable[[], None]]) -> None:
        self.interval = interval
        self.steps = list(steps)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="auditline-follow", daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for step in self.steps:
                try:
                    step()
                except Exception:
                    # The database gone for a moment: the next round tries again.
                    log.exception("following the shared state failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
