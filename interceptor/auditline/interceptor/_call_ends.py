"""`CallEnds`: the records of sync calls whose handler has returned, kept until gRPC says
each call has ended (its termination callback, on gRPC's polling thread), when the
record is settled and handed on. No thread polls them; one that never reports its end
is taken as it stood after a while (`stale`)."""

from __future__ import annotations

import threading
import time

from auditline.interceptor._record import CallRecord

__all__ = ["CallEnds"]


class CallEnds:
    def __init__(self) -> None:
        # Taken as a plain lock on the request path; flushes wait on the condition.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._flushes = 0  # waiting in `wait_for_earlier`
        # Oldest first: tokens grow, and a dict keeps the order they were added in.
        self._waiting: dict[int, tuple[CallRecord, float]] = {}
        self._next = 0

    def add(self, record: CallRecord) -> int:
        """Keep a record until its call ends; its token."""
        with self._lock:
            token = self._next
            self._next += 1
            self._waiting[token] = (record, time.monotonic())
        return token

    def take(self, token: int) -> CallRecord | None:
        """The record, once (None: taken already, as stale)."""
        with self._lock:
            entry = self._waiting.pop(token, None)
            if entry is not None and self._flushes:
                self._cond.notify_all()
        return entry[0] if entry is not None else None

    def stale(self, since: float | None) -> list[CallRecord]:
        """Take the records kept since before `since` (time.monotonic; None: all)."""
        taken: list[CallRecord] = []
        with self._lock:
            while self._waiting:
                token, (record, added) = next(iter(self._waiting.items()))
                if since is not None and added >= since:
                    break
                del self._waiting[token]
                taken.append(record)
            if taken and self._flushes:
                self._cond.notify_all()
        return taken

    def wait_for_earlier(self, timeout: float | None) -> bool:
        """Wait until every record kept before now has been taken; False on timeout."""
        with self._cond:
            mark = self._next
            self._flushes += 1
            try:
                return self._cond.wait_for(
                    lambda: not self._waiting or next(iter(self._waiting)) >= mark, timeout
                )
            finally:
                self._flushes -= 1
