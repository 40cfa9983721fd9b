"""`HeldEvents`: the events a serving process holds for its audit worker (waiting to be
sent, or for the worker's acknowledgement), bounded so that a worker that falls behind
cannot make the serving process grow without end."""

from __future__ import annotations

import logging
import time
from typing import Any

from auditline.interceptor._types import AuditUnavailableError

__all__ = ["HeldEvents"]

BEHIND = "the audit worker was behind"
UNENCODABLE = "their batch could not be encoded for the audit worker"
UNWRITTEN = "the audit worker died with them in memory, its spool unable to write"

log = logging.getLogger("auditline.interceptor")


class HeldEvents:
    """A count of held events against `limit`. Not thread-safe: the worker's lock
    guards it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.lost = 0  # events never handed over (past the limit, or to a worker given up)
        self._unreported: dict[str, int] = {}  # lost by reason, for the next batch to tell
        # Loss reports are numbered: those the worker's spool has not kept yet (saved,
        # or in a marker) are sent again to a worker started again, which counts only
        # those it has not (`Spool.count_lost`).
        self._last_report = 0
        self._unkept: list[tuple[Any, ...]] = []

    @property
    def full(self) -> bool:
        return self.count >= self.limit

    def behind(self) -> str:
        return f"the audit worker is behind: {self.count} events wait for it"

    def take(self, count: int, *, wait: bool) -> int:
        """Hold up to `count` more events, as many as there is room for; how many.
        Short of room: with `wait` (fail-closed) raise `AuditUnavailableError` and hold
        none; else count those left out as lost (the log's next drop marker says so)."""
        room = max(0, self.limit - self.count)
        if count <= room:
            self.count += count
            return count
        if wait:
            raise AuditUnavailableError(self.behind())
        if not self._unreported.get(BEHIND):
            log.error("%s: events are counted as lost", self.behind())
        self.count += room
        self.count_lost(count - room, BEHIND)
        return room

    def count_lost(self, count: int, reason: str) -> None:
        """Events never handed over (past the limit, or held and then not sent): the
        log's next drop marker says so."""
        if count > 0:
            self.lost += count
            self._unreported[reason] = self._unreported.get(reason, 0) + count

    def lose(self, count: int, why: str) -> None:
        """Held events no worker will take (it was given up, or closed first): counted
        here and in the log, the one place left (no marker can be written)."""
        if count > 0:
            self.count = max(0, self.count - count)
            self.lost += count
            log.error("%d audit events held for the worker are lost: %s", count, why)

    def release(self, count: int) -> None:
        """Events the worker acknowledged."""
        self.count -= count

    def report(self) -> list[tuple[Any, ...]]:
        """The items that tell the worker's spool of the losses not yet reported, one
        a reason, each numbered."""
        items = []
        for reason, count in self._unreported.items():
            self._last_report += 1
            items.append(("lost", count, reason, time.time_ns(), self._last_report))
        self._unreported = {}
        self._unkept.extend(items)
        return items

    def kept(self, last: int) -> None:
        """The worker's spool has kept the loss reports up to number `last` (the next
        is numbered after it: a spool keeps the numbers of earlier serving processes)."""
        self._last_report = max(self._last_report, last)
        if self._unkept:
            self._unkept = [item for item in self._unkept if item[4] > last]

    def unkept(self) -> list[tuple[Any, ...]]:
        """The loss reports the worker's spool has not kept, in order."""
        return list(self._unkept)
