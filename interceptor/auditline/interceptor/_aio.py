"""`AsyncAuditInterceptor`: the audit interceptor for `grpc.aio` servers.

Handlers run where grpc.aio would run them: coroutines and async generators on the
event loop, plain functions and generators in a thread (`_aio_threads`). Handlers get
a thin context that counts reads and writes, cuts over-long status messages, and in
fail-closed mode records the call before an `abort` sends its status (grpc.aio
sends it at once); everything else is delegated.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message

from auditline.interceptor._aio_call import (
    AioCall,
    AuditedContext,
    answer_uncaught,
    uncaught,
)
from auditline.interceptor._aio_settle import (
    LOOP_HEARTBEAT_SECONDS,
    LoopTurns,
    one_request,
    settle_before_status,
)
from auditline.interceptor._aio_threads import HandlerThreads, is_async_handler
from auditline.interceptor._base import AuditInterceptorBase, Refusal, serialize_unary
from auditline.interceptor._methods import MethodInfo, message_class_of, method_info
from auditline.interceptor._record import CallRecord
from auditline.interceptor._scope import SCOPE
from auditline.interceptor._status import (
    fit_for_clients,
    sendable,
    sendable_trailers,
    uncaught_details,
)
from auditline.interceptor._unary_request import no_request_details

__all__ = ["AsyncAuditInterceptor"]

log = logging.getLogger("auditline.interceptor")


# grpc.RpcMethodHandler: its stubs type messages, while these wrappers pass bytes.
Handler = Any
Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None


class AsyncAuditInterceptor(AuditInterceptorBase, grpc.aio.ServerInterceptor):
    __doc__ = AuditInterceptorBase.__doc__

    # Where plain (not async) handlers run: made on the first such call.
    _threads: HandlerThreads | None = None
    # When each event loop last had a turn free: made on the first call.
    _loop_turns: LoopTurns | None = None

    def close(self, timeout: float | None = 10.0) -> None:
        super().close(timeout)
        if self._loop_turns is not None:
            self._loop_turns.stop()
        if self._threads is not None:
            self._threads.close()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method: str = handler_call_details.method
        try:
            handler = await continuation(handler_call_details)
        except Exception as exc:
            return self._rejecting(
                method_info(method),
                grpc.StatusCode.UNKNOWN,
                f"Exception servicing handler: {type(exc).__name__}",
            )
        if handler is None:
            return self._rejecting(
                method_info(method), grpc.StatusCode.UNIMPLEMENTED, "Method not found!"
            )
        return self._cached(method, handler, self._wrap)

    # --- recording ------------------------------------------------------------

    def _capture(
        self, call: AioCall, context: Any, error: BaseException | None, *, with_response: bool
    ) -> CallRecord:
        gone = call.gone(error)
        if call.answered and isinstance(error, asyncio.CancelledError):
            error = None  # cancelled as its status was settled: the handler had answered
        return self._core.capture(
            call=call,
            context=context,
            error=error,
            ended_by_client=gone,
            with_response=with_response,
            peer=call.peer,
            auth_context=call.auth_context,
        )

    def _abandoned(self, call: AioCall, context: Any) -> None:
        """A handler's coroutine closed without being resumed (GeneratorExit: its task
        destroyed with an event loop stopped and closed while the call was in flight).
        It ends in the garbage collector, outside the call's context (its scope is not
        reset there) and with nothing to await: the call is recorded as the client saw
        it, cancelled, and queued (fail-closed too: no answer is left to refuse)."""
        if not call.recorded:
            call.recorded = True
            call.undelivered = True
            cut_short = GeneratorExit()  # its handler did not finish
            self._queue(self._capture(call, context, cut_short, with_response=False))

    async def _finish(self, call: AioCall, context: Any, error: BaseException | None) -> None:
        """Record a finished call. Fail-closed, when its events cannot be kept and
        the answer is not sent yet, answer UNAVAILABLE instead."""
        if call.recorded:
            return  # recorded when it aborted
        call.recorded = True
        if not context.done() and not call.undelivered:
            if error is not None and uncaught(error) and not context.details():
                context.set_details(uncaught_details(error))  # not its message: secrets
            fit_for_clients(context)
        record = self._capture(call, context, error, with_response=True)
        if not self._fail_closed or not call.admitted:
            self._queue(record)  # a refused call's event: kept if it can be, else counted
            await answer_uncaught(call, context, error)
            return
        reason = await self._keep_async(record)
        if reason and not call.gone(error) and not context.done():
            context.set_trailing_metadata(())  # the rich details of the replaced answer
            await context.abort(grpc.StatusCode.UNAVAILABLE, reason)
        await answer_uncaught(call, context, error)

    async def _abort(
        self, call: AioCall, context: Any, code: Any, details: str, trailing_metadata: Any
    ) -> None:
        """Abort the call. grpc.aio sends the status at once, so in fail-closed mode the
        call's events are kept first (or the answer becomes UNAVAILABLE)."""
        if code == grpc.StatusCode.OK or code == 0:
            # grpc's sync server answers UNKNOWN without a message to an abort with OK;
            # grpc.aio fails an assertion and never answers (the client waits for its
            # deadline) while the log would say what the handler set. Answer as sync.
            log.error("abort() called with StatusCode.OK; returning UNKNOWN")
            code, details = grpc.StatusCode.UNKNOWN, ""
        details = sendable(details) or details
        trailers = sendable_trailers(trailing_metadata, details)
        if trailers is not None:
            trailing_metadata = trailers
        if self._fail_closed and call.admitted and not call.recorded:
            call.recorded = True
            context.set_code(code)
            context.set_details(details)
            if trailing_metadata:
                context.set_trailing_metadata(tuple(trailing_metadata))
            record = self._capture(call, context, None, with_response=False)
            reason = await self._keep_async(record)
            if reason:
                context.set_trailing_metadata(())
                code, details, trailing_metadata = grpc.StatusCode.UNAVAILABLE, reason, ()
        await context.abort(code, details, tuple(trailing_metadata))

    async def _start(self, call: AioCall, context: Any) -> None:
        """Before the handler: admission, then the limits on what the caller sent."""
        turns = self._loop_turns
        if turns is None:
            turns = self._loop_turns = LoopTurns(LOOP_HEARTBEAT_SECONDS)
        turns.follow(asyncio.get_running_loop())
        call.peer = context.peer()
        if self._core.config.principal is not None:
            call.auth_context = context.auth_context()
        refused = self._admission()
        if refused:
            await context.abort(grpc.StatusCode.UNAVAILABLE, refused)
        call.admitted = True
        refusal = self._metadata_refusal(context.invocation_metadata())
        if refusal is not None:
            await self._refuse(call, context, refusal)

    async def _refuse(self, call: AioCall, context: Any, refusal: Refusal) -> None:
        await self._abort(call, context, refusal.code, refusal.details, ())

    async def _parse(self, call: AioCall, raw: bytes, context: Any) -> Any:
        refusal = self._message_refusal(raw)
        if refusal is not None:
            call.on_receive(raw, None)
            await self._refuse(call, context, refusal)
        try:
            item = call.deserialize(raw) if call.deserialize is not None else raw
        except Exception:
            call.on_receive(raw, None)
            await self._refuse(
                call,
                context,
                Refusal(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the request is not a valid {call.info.method} request message",
                ),
            )
        call.on_receive(raw, item)
        return item

    def _rejecting(self, info: MethodInfo, code: grpc.StatusCode, details: str) -> Handler:
        async def behavior(requests: AsyncIterator[bytes], context: Any) -> None:
            call = AioCall(info, None, None)
            try:
                await self._start(call, context)
                await self._abort(call, context, code, details, ())
            except BaseException as exc:
                await self._finish(call, context, exc)
                raise

        return grpc.stream_stream_rpc_method_handler(behavior)

    # --- wrapping the four call shapes -------------------------------------

    def _wrap(self, info: MethodInfo, handler: Handler) -> Handler:
        deserialize: Deserializer = handler.request_deserializer
        serialize: Serializer = handler.response_serializer
        request_class = info.request_class or message_class_of(deserialize)
        # Requests arrive as bytes: the interceptor parses them itself (to audit the
        # malformed and the oversized). Every method is served as request-streaming,
        # and a unary one's request read here (`_argument`): grpc.aio reads it before
        # any behavior runs, and ends on its own, unaudited, the calls that send none,
        # are cancelled or expire meanwhile, or whose request is over its limit
        # (found by a review helper), as gRPC's sync server does (`_unary_request`).
        if handler.unary_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary_response(
                    info, handler.unary_unary, serialize, request_class, deserialize, False
                )
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary_response(
                    info, handler.stream_unary, serialize, request_class, deserialize, True
                )
            )
        inner = handler.unary_stream or handler.stream_stream
        behavior = self._stream_response(
            info, inner, serialize, request_class, deserialize, handler.stream_stream is not None
        )
        # Messages go out serialized by the behavior: grpc.aio would take a failure
        # to serialize one for the client's cancel, and send the exception's text.
        return grpc.stream_stream_rpc_method_handler(behavior)

    async def _argument(self, call: AioCall, request: Any, context: Any, streaming: bool) -> Any:
        if not streaming:  # the one request message, read as grpc.aio would
            raw = await one_request(call, context, turns=self._loop_turns)
            if raw is not None:
                return await self._parse(call, raw, context)
            # None came: answered as gRPC's sync server does (grpc.aio waited for the
            # deadline); the abort raises.
            details = no_request_details(context, call.info.full_method)
            await self._abort(call, context, grpc.StatusCode.UNIMPLEMENTED, details, ())

        async def requests() -> AsyncIterator[Any]:
            async for raw in request:
                call.resumed = time.monotonic()
                yield await self._parse(call, raw, context)
            call.eof = True
            call.resumed = time.monotonic()

        return requests()

    def _handler_threads(self) -> HandlerThreads:
        if self._threads is None:
            self._threads = HandlerThreads()
        return self._threads

    def _unary_response(
        self,
        info: MethodInfo,
        inner: Any,
        serialize: Serializer,
        request_class: type[message.Message] | None,
        deserialize: Deserializer,
        streaming_request: bool,
    ) -> Any:
        """The behavior of a unary-response call (unary-unary or stream-unary)."""

        async def behavior(request: Any, context: Any) -> bytes | None:
            call = AioCall(info, request_class, deserialize)
            call.unary_response = True
            token = SCOPE.set(call)
            error: BaseException | None = None
            try:
                await self._start(call, context)
                argument = await self._argument(call, request, context, streaming_request)
                audited = AuditedContext(context, call, self._parse, self._abort)
                if is_async_handler(inner):
                    result = await inner(argument, audited)
                else:
                    threads = self._handler_threads()
                    result = await threads.unary(inner, argument, audited, streaming_request)
                    call.resumed = time.monotonic()  # the loop was free while it ran
                response = serialize_unary(result, serialize, context)
                if response is not None:
                    call.on_send(result)
                call.answered = True
                await settle_before_status(
                    call, context, turns=self._loop_turns, fail_closed=self._fail_closed
                )
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                if isinstance(error, GeneratorExit):
                    self._abandoned(call, context)
                else:
                    SCOPE.reset(token)
                    await self._finish(call, context, error)

        return behavior

    def _stream_response(
        self,
        info: MethodInfo,
        inner: Any,
        serialize: Serializer,
        request_class: type[message.Message] | None,
        deserialize: Deserializer,
        streaming_request: bool,
    ) -> Any:
        """The behavior of a server-streaming call, in the handler's own style (in the
        order grpc.aio tells them apart: reader/writer coroutine, async generator, and
        anything else is a plain function or generator)."""
        if not inspect.iscoroutinefunction(inner):
            plain = not inspect.isasyncgenfunction(inner)

            async def generator(request: Any, context: Any) -> AsyncIterator[Any]:
                call = AioCall(info, request_class, deserialize)
                error: BaseException | None = None
                try:
                    token = SCOPE.set(call)
                    try:
                        await self._start(call, context)
                        argument = await self._argument(call, request, context, streaming_request)
                        audited = AuditedContext(context, call, self._parse, self._abort, serialize)
                        responses = (
                            self._handler_threads().stream(
                                inner, argument, audited, streaming_request
                            )
                            if plain
                            else inner(argument, audited)
                        )
                    finally:
                        SCOPE.reset(token)
                    while True:
                        token = SCOPE.set(call)
                        try:
                            item = await responses.__anext__()
                        except StopAsyncIteration:
                            break
                        finally:
                            SCOPE.reset(token)
                        data = serialize(item) if serialize is not None else item
                        call.on_send(item)
                        call.headers_sent = True
                        yield data
                        call.resumed = time.monotonic()  # gRPC sent it and came back
                    if plain:
                        call.resumed = time.monotonic()  # it ran in a thread
                    call.answered = True
                    await settle_before_status(
                        call, context, turns=self._loop_turns, fail_closed=self._fail_closed
                    )
                except GeneratorExit as exc:
                    # gRPC stopped reading this generator: its task was cancelled (the
                    # client cancelled, or its deadline passed) while it sent a message.
                    call.undelivered = True
                    error = exc
                    raise
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    await self._finish(call, context, error)

            return generator

        async def coroutine(request: Any, context: Any) -> None:
            call = AioCall(info, request_class, deserialize)
            token = SCOPE.set(call)
            error: BaseException | None = None
            try:
                await self._start(call, context)
                argument = await self._argument(call, request, context, streaming_request)
                await inner(
                    argument, AuditedContext(context, call, self._parse, self._abort, serialize)
                )
                call.answered = True
                await settle_before_status(
                    call, context, turns=self._loop_turns, fail_closed=self._fail_closed
                )
            except BaseException as exc:
                error = exc
                raise
            finally:
                if isinstance(error, GeneratorExit):
                    self._abandoned(call, context)
                else:
                    SCOPE.reset(token)
                    await self._finish(call, context, error)

        return coroutine
