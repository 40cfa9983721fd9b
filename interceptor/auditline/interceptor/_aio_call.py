"""What the asyncio interceptor keeps of a call while it runs (`AioCall`), the context
its handler sees (`AuditedContext`), and the answer to an uncaught exception
(`answer_uncaught`)."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message

from auditline.interceptor._call_state import CallState
from auditline.interceptor._methods import MethodInfo

__all__ = [
    "Abort",
    "AioCall",
    "AuditedContext",
    "Parse",
    "answer_uncaught",
    "uncaught",
]

log = logging.getLogger("auditline.interceptor")

Deserializer = Callable[[bytes], Any] | None


# The interceptor's own steps the handler's context calls back into.
Parse = Callable[["AioCall", bytes, Any], Awaitable[Any]]
Abort = Callable[["AioCall", Any, Any, str, Any], Awaitable[None]]


class AioCall(CallState):
    """A call's state, and what only grpc.aio needs tracked of it."""

    __slots__ = (
        "answered",
        "auth_context",
        "deserialize",
        "eof",
        "headers_sent",
        "peer",
        "recorded",
        "resumed",
        "undelivered",
    )

    def __init__(
        self,
        info: MethodInfo,
        request_class: type[message.Message] | None,
        deserialize: Deserializer,
    ) -> None:
        super().__init__(info, request_class)
        self.deserialize = deserialize
        self.recorded = False
        self.answered = False  # the handler returned (a stream's: ran out) without error
        self.eof = False  # the request stream ended (half-closed, or cancelled: alike here)
        self.undelivered = False  # the final status could not be sent: the client is gone
        self.headers_sent = False  # initial metadata went out (with a message, or alone)
        # When the handler last had the event loop back from the call (time.monotonic):
        # it began, or a message was read or written (`HELD_LOOP_SECONDS`).
        self.resumed = time.monotonic()
        # Read while the call is alive: gRPC may release it before a streaming
        # handler's generator is finished (then only the status fields are safe).
        self.peer = ""
        self.auth_context: Any = None

    def gone(self, error: BaseException | None) -> bool:
        """Whether the client saw the call end without its answer: grpc.aio cancels
        the handler's task when the client cancels or its deadline passes (a handler
        may catch that and answer anyway: the task still counts the cancel; found by a
        review helper, such calls were logged with the answer no one received), or the
        final status could not be sent (`_send_status`)."""
        if self.undelivered or isinstance(error, asyncio.CancelledError):
            return True
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no event loop running: a coroutine closed by the collector
            return False
        return task is not None and task.cancelling() > 0


class AuditedContext:
    """The servicer context a handler sees: counts reads and writes, and records the
    call before an abort sends its status; delegates everything else."""

    def __init__(
        self,
        context: Any,
        call: AioCall,
        parse: Parse,
        abort: Abort,
        serialize: Callable[[Any], bytes] | None = None,
    ) -> None:
        self._context = context
        self._call = call
        # Parse a message read (counted, the first kept); record the call before an
        # abort sends its status.
        self._parse = parse
        self._abort = abort
        # A streaming call's messages are serialized here, not by grpc.aio, whose
        # failure to would end the call as if the client had cancelled it.
        self._serialize = serialize

    async def read(self) -> Any:
        raw = await self._context.read()
        self._call.resumed = time.monotonic()
        if raw is grpc.aio.EOF:
            self._call.eof = True
            return raw
        return await self._parse(self._call, raw, self._context)

    async def write(self, item: Any) -> None:
        # Counted before the write completes: a cancel may reach the task first, when
        # the message has reached the client already.
        data = self._serialize(item) if self._serialize is not None else item
        self._call.headers_sent = True
        self._call.on_send(item)
        await self._context.write(data)
        self._call.resumed = time.monotonic()

    async def send_initial_metadata(self, metadata: Any) -> None:
        self._call.headers_sent = True
        await self._context.send_initial_metadata(metadata)
        self._call.resumed = time.monotonic()

    async def abort(self, code: Any, details: str = "", trailing_metadata: Any = ()) -> None:
        await self._abort(self._call, self._context, code, details, trailing_metadata)

    async def abort_with_status(self, status: grpc.Status) -> None:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def uncaught(error: BaseException | None) -> bool:
    """Whether a handler's call ended in an exception of the application's own (not
    an abort, not a cancellation)."""
    return isinstance(error, Exception) and not isinstance(error, grpc.aio.AbortError)


async def answer_uncaught(call: AioCall, context: Any, error: BaseException | None) -> None:
    """grpc.aio answers an uncaught exception with its message (which may hold
    secrets; long, the client sees another code), whatever the handler set: answer
    what the log says (`AsyncAuditInterceptor._finish` set the message to the type
    when the handler set none; a code it set stands, as on gRPC's sync server).
    gRPC would have logged the exception; so does this, its type and where it was
    raised, not its message (which may hold secrets: a connection string, a key)."""
    if not uncaught(error) or call.undelivered or context.done():
        return
    assert error is not None
    log.error(
        "Unexpected error in an audited call's handler: %s (its message left out)\n%s",
        type(error).__name__,
        "".join(traceback.format_tb(error.__traceback__)).rstrip(),
    )
    code = context.code()
    if code is None or code == grpc.StatusCode.OK or code == 0:
        code = grpc.StatusCode.UNKNOWN
    await context.abort(code, context.details() or "")
