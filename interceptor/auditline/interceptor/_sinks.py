"""Sinks shipped with the interceptor."""

from __future__ import annotations

import threading

from auditline.audit.v1 import event_pb2

__all__ = ["MemorySink"]


class MemorySink:
    """Keeps events in memory, in order: for tests and examples."""

    def __init__(self) -> None:
        self.events: list[event_pb2.ApiEvent] = []
        self._changed = threading.Condition()

    def emit(self, event: event_pb2.ApiEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[event_pb2.ApiEvent]:
        """Wait until at least `count` events arrived; return them all."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.events) >= count, timeout):
                raise TimeoutError(f"{len(self.events)} of {count} audit events after {timeout}s")
            return list(self.events)
