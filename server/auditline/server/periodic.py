"""Work a node does in the background every few seconds: `Periodic` runs its steps
each round, and a step that fails is logged and tried again at the next round.

`app` runs two: the usage snapshots, and what a replica follows from the database.
Most of the state replicas share is read from the database on every call (accounts,
sessions and their revocation, login failures and blocks, buckets, permissions), so
it is the same on every replica at once; the audit target and the exporters defined
through `ExporterService` are also *running* state on each replica, applied from the
database every `--state-poll-interval` seconds, when this node also reports its
exporters' status (`exporter_reports`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Periodic"]

log = logging.getLogger("auditline.server")


class Periodic:
    """Runs each step every `interval` seconds until stopped (0: never)."""

    def __init__(self, *, name: str, interval: float, steps: Sequence[Callable[[], Any]]) -> None:
        self.name = name
        self.interval = interval
        self.steps = list(steps)
        self._stop = threading.Event()
        self._wake = threading.Event()  # set: a round now, and at each interval from it
        self._thread = threading.Thread(target=self._run, name=f"auditline-{name}", daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self._round()

    def _round(self) -> None:
        for step in self.steps:
            try:
                step()
            except Exception:
                # The database or the store gone for a moment: the next round.
                log.exception("%s: a round failed", self.name)

    def run_soon(self) -> None:
        """Run a round now rather than at the end of the interval; with no interval
        (no thread), on the caller's thread: asked for, a round still runs."""
        if self.interval > 0:
            self._wake.set()
        elif not self._stop.is_set():
            self._round()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(10)
