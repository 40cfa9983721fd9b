"""Sinks shipped with the interceptor."""

from __future__ import annotations

import threading
from pathlib import Path

from google.protobuf import json_format

from auditline.audit.v1 import event_pb2

__all__ = ["JsonLinesSink", "MemorySink"]


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


class JsonLinesSink:
    """Appends each event as one line of JSON (the `ApiEvent` shape) to a file.

    A plain file for embedders who want no more; nothing here survives a lost
    write buffer or rotates the file.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        path.chmod(0o600)
        self._lock = threading.Lock()

    def emit(self, event: event_pb2.ApiEvent) -> None:
        line = json_format.MessageToJson(
            event, indent=None, always_print_fields_with_no_presence=True
        )
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()
