"""Slots for calls that hold a thread of the sync server while they last (event tails,
reflection streams): a few of each kind at once, so that they never take the threads
every other call, a login or a health check, needs."""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc

__all__ = ["CallSlots"]


class CallSlots:
    """At most `size` calls at once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = threading.BoundedSemaphore(size)

    def take(self, context: grpc.ServicerContext) -> Callable[[], None] | None:
        """A slot for the call, or None when all are taken. It is given back as the
        call ends (gRPC's callback: a stream's generator may be closed later), or
        by calling what this returns, whichever comes first."""
        if not self._free.acquire(blocking=False):
            return None
        lock = threading.Lock()
        held = True

        def give_back() -> None:
            nonlocal held
            with lock:
                if not held:
                    return
                held = False
            self._free.release()

        context.add_callback(give_back)
        return give_back
