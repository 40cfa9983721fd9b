"""How the sync interceptor reads the one request message of a unary-request call.

gRPC's sync server reads a unary method's request before it runs the method's
behavior, and ends on its own, with no behavior run, the calls cancelled or expired
meanwhile (waiting for a thread, or for their request) and those that sent no
message: none of them would reach the interceptor, nor the audit log. So the
interceptor serves unary-request methods as request-streaming ones, its behavior
runs at once, and it reads the request from gRPC's request iterator here.

That read blocks a server thread, without a timeout, until the request comes: a
client that opens calls and never sends their message holds the server's threads for
as long as it keeps its connection. gRPC has no timeout for the wait, but its
`ServicerContext.cancel()` may be called from any thread and wakes the waiting one:
`RequestWait` cancels the calls whose request is overdue, from one thread per
interceptor. A call whose request is there, or soon, costs a dict insert and a pop:
no timer, no thread and no lock per call.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections.abc import Iterator

import grpc

__all__ = ["RequestWait", "Unreached", "first_request", "no_request_details"]

log = logging.getLogger("auditline.interceptor")


class Unreached(Exception):
    """The call's request did not come within the bound: the call has been cancelled."""


class RequestWait:
    """Cancels the calls that have waited more than `bound` seconds for their request.

    A waiting call is registered (`begin`) and taken back (`end`): whichever of `end`
    and the watch takes its entry first decides, so a call whose handler may have
    started is never cancelled, and one the watch cancels is never served.
    """

    def __init__(self, bound: float) -> None:
        if not bound > 0:
            raise ValueError(f"request_timeout must be positive, not {bound!r}")
        self.bound = bound
        # Overdue calls are cancelled between `bound` and `bound + tick` seconds.
        self._tick = min(1.0, max(0.01, bound / 10))
        # Only the calls whose thread waits right now: at most the pool's size.
        self._waiting: dict[int, tuple[float, grpc.ServicerContext]] = {}
        self._tickets = itertools.count()  # its next() is atomic under the GIL
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def begin(self, context: grpc.ServicerContext) -> int:
        """A call starts waiting for its request: the ticket to `end` the wait with."""
        ticket = next(self._tickets)
        self._waiting[ticket] = (time.monotonic(), context)
        if self._thread is None:
            self._start()
        return ticket

    def end(self, ticket: int) -> bool:
        """The wait is over: True if in time, False if the watch has cancelled the call
        (or is about to: it has taken the call's entry)."""
        return self._waiting.pop(ticket, None) is not None

    def close(self, timeout: float | None = None) -> None:
        """Stop watching: calls that wait from now on are not bounded."""
        with self._lock:
            self._closed.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def cancel_overdue(self) -> None:
        """Cancel the calls whose request is overdue (the watch's tick)."""
        overdue = time.monotonic() - self.bound
        # A copy, made at once under the GIL (int keys: no Python code runs), as
        # request threads add and take entries meanwhile.
        for ticket, (since, context) in self._waiting.copy().items():
            if since > overdue or self._waiting.pop(ticket, None) is None:
                continue  # in time, or its request came meanwhile
            try:
                context.cancel()  # its waiting thread wakes up and records the call
            except Exception:  # the other calls are still to be watched
                log.exception("could not cancel a call whose request is overdue")

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed.is_set():
                return
            # The thread holds the watch weakly: an interceptor dropped unclosed does
            # not leave it running for good.
            self._thread = threading.Thread(
                target=_watch,
                args=(weakref.ref(self), self._closed, self._tick),
                name="auditline-request-wait",
                daemon=True,
            )
            self._thread.start()


def _watch(ref: weakref.ref[RequestWait], closed: threading.Event, tick: float) -> None:
    while not closed.wait(tick):
        wait = ref()
        if wait is None:
            return
        wait.cancel_overdue()
        del wait  # not kept alive while the thread sleeps


def no_request_details(context: grpc.ServicerContext, full_method: str) -> str:
    """What gRPC answers a unary method called without a request message, word for
    word (grpc/_server.py `_unary_request`): it names the method as its call details
    hold it, in bytes, empty for a method registered with the server. Read without
    the lock, as `_sync._call_state` reads gRPC's call state; the full method name
    (in bytes too) if a version of grpcio lacks it."""
    call_details = getattr(getattr(context, "_rpc_event", None), "call_details", None)
    method = getattr(call_details, "method", None)
    if not isinstance(method, bytes):
        method = full_method.encode()
    return f'"{method!r}" requires exactly one request message.'


def first_request(
    requests: Iterator[bytes],
    context: grpc.ServicerContext,
    full_method: str,
    wait: RequestWait | None,
) -> bytes:
    """The call's request message, as gRPC would have read it: it raises gRPC's
    `RpcError` if the call was cancelled, by the client or as its deadline passed,
    before or while it waits; a call whose client closed its side without a message is
    aborted UNIMPLEMENTED, as gRPC does. `Unreached` when `wait` cancelled the call."""
    if wait is None:
        raw = next(requests, None)
    else:
        ticket = wait.begin(context)
        try:
            raw = next(requests, None)
        except grpc.RpcError:
            if not wait.end(ticket):
                raise Unreached from None
            raise
        # Even if its request came as the watch took it (it may not have cancelled
        # the call yet, nor the client seen it): the call stays cancelled.
        if not wait.end(ticket):
            raise Unreached
    if raw is None:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, no_request_details(context, full_method))
    return raw
