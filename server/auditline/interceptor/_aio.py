"""`AsyncAuditInterceptor`: the audit interceptor for `grpc.aio` servers.

Handlers stay what they were: coroutines stay coroutines and async generators
stay async generators, so nothing is pushed to a thread pool. Reader/writer
handlers (`context.read()` / `context.write()`) get a thin context that counts
the messages and delegates everything else.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message

from auditline.interceptor._base import AuditInterceptorBase
from auditline.interceptor._core import (
    _SCOPE,
    AuditUnavailableError,
    _CallScope,
    enter_scope,
    exit_scope,
)
from auditline.interceptor._methods import MethodInfo, message_class_of, method_info

__all__ = ["AsyncAuditInterceptor"]

# grpc.RpcMethodHandler: its stubs type messages, while these wrappers pass bytes.
Handler = Any
Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None


class _Counts:
    __slots__ = ("cls", "first", "last", "received", "sent")

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0
        self.first: bytes | None = None
        self.cls: type[message.Message] | None = None
        self.last: Any = None

    def on_receive(self, item: Any) -> None:
        if self.received == 0 and isinstance(item, message.Message):
            self.first = item.SerializeToString()
            self.cls = type(item)
        self.received += 1

    def on_send(self, item: Any) -> None:
        self.sent += 1
        self.last = item


class _CountingContext:
    """The servicer context of a streaming call, counting reads and writes."""

    def __init__(self, context: Any, counts: _Counts) -> None:
        self._context = context
        self._counts = counts

    async def read(self) -> Any:
        item = await self._context.read()
        if item is not grpc.aio.EOF:
            self._counts.on_receive(item)
        return item

    async def write(self, item: Any) -> None:
        await self._context.write(item)
        self._counts.on_send(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


async def _settled(value: Any) -> Any:
    """A handler's result: awaited when it is awaitable (a coroutine), else as it is.

    Sync handlers on an asyncio server (with a migration thread pool) are wrapped as
    coroutines here, so they run on the event loop thread.
    """
    return await value if inspect.isawaitable(value) else value


async def _async_iterator(responses: Any) -> AsyncIterator[Any]:
    """The responses of a streaming handler, async generator or plain generator alike."""
    if hasattr(responses, "__anext__"):
        async for item in responses:
            yield item
    else:
        for item in responses:
            yield item


async def _counting_requests(requests: AsyncIterator[Any], counts: _Counts) -> AsyncIterator[Any]:
    async for item in requests:
        counts.on_receive(item)
        yield item


class AsyncAuditInterceptor(AuditInterceptorBase, grpc.aio.ServerInterceptor):
    __doc__ = AuditInterceptorBase.__doc__

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

    def _finish(
        self,
        info: MethodInfo,
        context: Any,
        started_ns: int,
        scope: _CallScope | None,
        error: BaseException | None,
        *,
        request: bytes | None,
        request_class: type[message.Message] | None,
        request_count: int,
        response: Any,
        response_count: int,
    ) -> None:
        # The handler task is cancelled when the client cancels or its deadline passes.
        ended_by_client = isinstance(error, asyncio.CancelledError)
        try:
            self._record(
                info,
                context,
                started_ns,
                scope,
                error,
                ended_by_client,
                request,
                request_class,
                request_count,
                response,
                response_count,
            )
        except AuditUnavailableError:
            if error is None:
                raise

    def _rejecting(self, info: MethodInfo, code: grpc.StatusCode, details: str) -> Handler:
        async def behavior(requests: AsyncIterator[bytes], context: Any) -> None:
            started = time.time_ns()
            context.set_code(code)
            context.set_details(details)
            self._finish(
                info,
                context,
                started,
                None,
                None,
                request=None,
                request_class=None,
                request_count=0,
                response=None,
                response_count=0,
            )
            await context.abort(code, details)

        return grpc.stream_stream_rpc_method_handler(behavior)

    # --- wrapping the four call shapes -------------------------------------

    def _wrap(self, info: MethodInfo, handler: Handler) -> Handler:
        if handler.unary_unary is not None:
            return self._unary_unary(info, handler)
        if handler.unary_stream is not None:
            return self._unary_stream(info, handler)
        if handler.stream_unary is not None:
            return self._stream_unary(info, handler)
        return self._stream_stream(info, handler)

    async def _admit(self, context: Any) -> None:
        """Refuse the call before it runs when its event could not be kept."""
        try:
            self._core.admit()
        except AuditUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    async def _parse(
        self, info: MethodInfo, deserialize: Deserializer, raw: bytes, context: Any
    ) -> Any:
        if deserialize is None:
            return raw
        try:
            return deserialize(raw)
        except Exception:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {info.method} request message",
            )

    @staticmethod
    def _serialize_unary(result: Any, serialize: Serializer, context: Any) -> bytes | None:
        if result is None:
            code = context.code()
            if code is None or code == grpc.StatusCode.OK or code == 0:
                context.set_code(grpc.StatusCode.INTERNAL)
                context.set_details("the handler returned no response")
            return None
        return serialize(result) if serialize is not None else result

    async def _unary_response(
        self,
        info: MethodInfo,
        context: Any,
        started: int,
        scope: _CallScope,
        token: Any,
        call: Awaitable[Any],
        serialize: Serializer,
        request: Callable[[], bytes | None],
        request_class: Callable[[], type[message.Message] | None],
        request_count: Callable[[], int],
    ) -> bytes | None:
        try:
            result = await call
            response = self._serialize_unary(result, serialize, context)
        except BaseException as exc:
            exit_scope(token)
            self._finish(
                info,
                context,
                started,
                scope,
                exc,
                request=request(),
                request_class=request_class(),
                request_count=request_count(),
                response=None,
                response_count=0,
            )
            raise
        exit_scope(token)
        try:
            self._finish(
                info,
                context,
                started,
                scope,
                None,
                request=request(),
                request_class=request_class(),
                request_count=request_count(),
                # The handler's own response object: the call is over, nothing else uses it.
                response=result,
                response_count=int(response is not None),
            )
        except AuditUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return response

    def _unary_unary(self, info: MethodInfo, handler: Handler) -> Handler:
        inner = handler.unary_unary
        deserialize: Deserializer = handler.request_deserializer
        serialize: Serializer = handler.response_serializer
        request_class = info.request_class or message_class_of(deserialize)

        async def behavior(raw: bytes, context: Any) -> bytes | None:
            started = time.time_ns()
            scope, token = enter_scope()

            async def call() -> Any:
                await self._admit(context)
                return await _settled(
                    inner(await self._parse(info, deserialize, raw, context), context)
                )

            return await self._unary_response(
                info,
                context,
                started,
                scope,
                token,
                call(),
                serialize,
                lambda: raw,
                lambda: request_class,
                lambda: 1,
            )

        return grpc.unary_unary_rpc_method_handler(behavior)

    def _stream_unary(self, info: MethodInfo, handler: Handler) -> Handler:
        inner = handler.stream_unary
        serialize: Serializer = handler.response_serializer
        request_class = info.request_class

        async def behavior(requests: AsyncIterator[Any], context: Any) -> bytes | None:
            started = time.time_ns()
            scope, token = enter_scope()
            counts = _Counts()

            async def call() -> Any:
                await self._admit(context)
                return await _settled(
                    inner(_counting_requests(requests, counts), _CountingContext(context, counts))
                )

            return await self._unary_response(
                info,
                context,
                started,
                scope,
                token,
                call(),
                serialize,
                lambda: counts.first,
                lambda: counts.cls or request_class,
                lambda: counts.received,
            )

        return grpc.stream_unary_rpc_method_handler(
            behavior, request_deserializer=handler.request_deserializer, response_serializer=None
        )

    def _streaming_response(
        self,
        info: MethodInfo,
        inner: Any,
        make_request: Callable[[Any, Any, _Counts], Awaitable[Any]],
        counts_request: bool,
        request_class: type[message.Message] | None,
    ) -> Any:
        """The behavior of a server-streaming call, in the handler's own style."""

        def finish(
            context: Any,
            started: int,
            scope: _CallScope,
            raw: bytes | None,
            counts: _Counts,
            error: BaseException | None,
        ) -> None:
            self._finish(
                info,
                context,
                started,
                scope,
                error,
                request=counts.first if counts_request else raw,
                request_class=(counts.cls or request_class) if counts_request else request_class,
                request_count=counts.received if counts_request else 1,
                # The handler's own last response: the call is over, nothing else uses it.
                response=counts.last,
                response_count=counts.sent,
            )

        if inspect.isasyncgenfunction(inner) or inspect.isgeneratorfunction(inner):

            async def generator(request: Any, context: Any) -> AsyncIterator[Any]:
                started = time.time_ns()
                scope = _CallScope()
                counts = _Counts()
                raw = request if isinstance(request, bytes) else None
                error: BaseException | None = None
                try:
                    await self._admit(context)
                    argument = await make_request(request, context, counts)
                    responses = _async_iterator(inner(argument, _CountingContext(context, counts)))
                    while True:
                        token = _SCOPE.set(scope)
                        try:
                            item = await responses.__anext__()
                        except StopAsyncIteration:
                            break
                        finally:
                            _SCOPE.reset(token)
                        counts.on_send(item)
                        yield item
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    finish(context, started, scope, raw, counts, error)

            return generator

        async def coroutine(request: Any, context: Any) -> None:
            started = time.time_ns()
            scope, token = enter_scope()
            counts = _Counts()
            raw = request if isinstance(request, bytes) else None
            error: BaseException | None = None
            try:
                await self._admit(context)
                argument = await make_request(request, context, counts)
                await inner(argument, _CountingContext(context, counts))
            except BaseException as exc:
                error = exc
                raise
            finally:
                exit_scope(token)
                finish(context, started, scope, raw, counts, error)

        return coroutine

    def _unary_stream(self, info: MethodInfo, handler: Handler) -> Handler:
        deserialize: Deserializer = handler.request_deserializer

        async def parse(raw: bytes, context: Any, counts: _Counts) -> Any:
            return await self._parse(info, deserialize, raw, context)

        behavior = self._streaming_response(
            info,
            handler.unary_stream,
            parse,
            False,
            info.request_class or message_class_of(deserialize),
        )
        return grpc.unary_stream_rpc_method_handler(
            behavior, request_deserializer=None, response_serializer=handler.response_serializer
        )

    def _stream_stream(self, info: MethodInfo, handler: Handler) -> Handler:
        async def count(requests: AsyncIterator[Any], context: Any, counts: _Counts) -> Any:
            return _counting_requests(requests, counts)

        behavior = self._streaming_response(
            info, handler.stream_stream, count, True, info.request_class
        )
        return grpc.stream_stream_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
