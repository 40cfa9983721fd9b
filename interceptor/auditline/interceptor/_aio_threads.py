"""Plain (not async) handlers on a grpc.aio server, run as grpc.aio runs them without
the interceptor: in a thread, off the event loop, with a context whose `abort` raises
in the handler's thread (`ThreadContext`, after grpc.aio's own sync servicer context).

The interceptor's wrappers are coroutines, so grpc.aio would never hand these handlers
to its migration thread pool; the interceptor does it itself. That pool is out of its
reach (grpc.aio keeps it inside its Cython server), so it uses threads of its own
(`HandlerThreads`), not the event loop's default executor: a fail-closed call may keep
its events through that one, and a handler waiting in `abort` for them must not hold
the thread they need.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from concurrent import futures
from typing import Any, TypeVar

import grpc

__all__ = ["HandlerThreads", "ThreadContext", "blocking_requests", "is_async_handler"]

log = logging.getLogger("auditline.interceptor")

T = TypeVar("T")
_END = object()


def is_async_handler(handler: Any) -> bool:
    """Whether grpc.aio runs `handler` on its event loop (`_is_async_handler` in its
    server); anything else it runs in its thread pool."""
    return inspect.iscoroutinefunction(handler) or inspect.isasyncgenfunction(handler)


def wait_on(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on `loop` from a handler's thread, and wait for its result (its
    exception is raised here: an abort's, say)."""
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:  # it would wait for itself forever
        coroutine.close()
        raise RuntimeError("a plain handler's context cannot block the event loop's own thread")
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


async def _next(requests: AsyncIterator[Any]) -> Any:
    return await requests.__anext__()


def blocking_requests(
    requests: AsyncIterator[Any], loop: asyncio.AbstractEventLoop
) -> Iterator[Any]:
    """A plain handler's request iterator: each message is read (and parsed, counted or
    refused by the interceptor) on the event loop while the handler's thread waits."""
    while True:
        try:
            yield wait_on(loop, _next(requests))
        except StopAsyncIteration:
            return


class HandlerThreads:
    """The threads plain handlers run in: started on first use, stopped by `close`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: futures.ThreadPoolExecutor | None = None

    def _executor(self) -> futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                # As many threads as the loop's default executor, which grpc.aio uses
                # when it is given no migration thread pool.
                self._pool = futures.ThreadPoolExecutor(thread_name_prefix="auditline-handler")
            return self._pool

    async def unary(
        self, handler: Any, argument: Any, audited: Any, streaming_request: bool
    ) -> Any:
        """A plain unary-response handler's response: the handler is called in a thread,
        with the call's context (`audited`) made blocking."""
        loop = asyncio.get_running_loop()
        if streaming_request:
            argument = blocking_requests(argument, loop)
        return await self._run(handler, argument, ThreadContext(audited, loop))

    def stream(
        self, handler: Any, argument: Any, audited: Any, streaming_request: bool
    ) -> AsyncIterator[Any]:
        """A plain streaming handler's responses: the handler is called, and its
        iterator advanced, in a thread (grpc.aio's `generator_to_async_generator`)."""
        loop = asyncio.get_running_loop()
        if streaming_request:
            argument = blocking_requests(argument, loop)
        context = ThreadContext(audited, loop)
        return self._responses(lambda: handler(argument, context))

    async def _responses(self, make: Callable[[], Iterable[Any]]) -> AsyncIterator[Any]:
        iterator = await self._run(lambda: iter(make()))
        while True:
            # A sentinel, not StopIteration: that one cannot cross a future.
            item = await self._run(next, iterator, _END)
            if item is _END:
                return
            yield item

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in a thread. It runs in a copy of the caller's context, so
        that the call's audit scope goes with it (`set_principal` in the handler)."""
        call = functools.partial(contextvars.copy_context().run, function, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor(), call)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class ThreadContext:
    """The context a plain handler sees, in its thread: the audited context with
    grpc.aio's sync servicer context's methods. Those that are coroutines there
    (`abort`, `send_initial_metadata`) run on the event loop while the thread waits,
    so an abort raises in the handler and ends it, as on gRPC's sync server.

    `add_callback` and `is_active` follow gRPC's sync server: callbacks run when the
    call terminates, however it ends (grpc.aio's own sync context runs them only once
    a unary handler has returned).
    """

    def __init__(self, context: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._context = context
        self._loop = loop
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] | None = []  # None: the call has ended
        context.add_done_callback(self._ended)

    def _ended(self, _context: Any) -> None:
        with self._lock:
            callbacks, self._callbacks = self._callbacks or [], None
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a plain handler's add_callback callback failed")

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._lock:
            if self._callbacks is None:
                return False  # the call has terminated already
            self._callbacks.append(callback)
            return True

    def is_active(self) -> bool:
        return self._callbacks is not None

    def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        wait_on(self._loop, self._context.abort(code, details, tuple(trailing_metadata)))

    def abort_with_status(self, status: grpc.Status) -> None:
        self.abort(status.code, status.details, status.trailing_metadata)

    def send_initial_metadata(self, metadata: Any) -> None:
        wait_on(self._loop, self._context.send_initial_metadata(metadata))

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._context.set_trailing_metadata(metadata)

    def trailing_metadata(self) -> Any:
        return self._context.trailing_metadata()

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def set_code(self, code: grpc.StatusCode) -> None:
        self._context.set_code(code)

    def code(self) -> Any:
        return self._context.code()

    def set_details(self, details: str) -> None:
        self._context.set_details(details)

    def details(self) -> Any:
        return self._context.details()

    def set_compression(self, compression: grpc.Compression) -> None:
        self._context.set_compression(compression)

    def disable_next_message_compression(self) -> None:
        self._context.disable_next_message_compression()

    def peer(self) -> str:
        return str(self._context.peer())

    def peer_identities(self) -> Any:
        return self._context.peer_identities()

    def peer_identity_key(self) -> Any:
        return self._context.peer_identity_key()

    def auth_context(self) -> Any:
        return self._context.auth_context()

    def time_remaining(self) -> float | None:
        remaining: float | None = self._context.time_remaining()
        return remaining
