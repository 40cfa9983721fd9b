"""`AuditInterceptor`: the audit interceptor for `grpc.server` (thread pool) servers."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
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

__all__ = ["AuditInterceptor"]

# grpc.RpcMethodHandler: its stubs type messages, while these wrappers pass bytes.
Handler = Any
Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None


class _UnaryRequest:
    """The request of a unary call: its bytes as received, and its type once parsed."""

    __slots__ = ("_parse", "cls", "count", "raw")

    def __init__(
        self,
        raw: bytes,
        cls: type[message.Message] | None,
        parse: Callable[[bytes, grpc.ServicerContext], Any],
    ) -> None:
        self.raw: bytes | None = raw
        self.cls = cls  # the expected type, until the parsed object says otherwise
        self.count = 1
        self._parse = parse

    def argument(self, context: grpc.ServicerContext) -> Any:
        """The handler's argument: the parsed request."""
        request = self._parse(self.raw or b"", context)
        if isinstance(request, message.Message):
            self.cls = type(request)
        return request


class _RequestCounter:
    """Wraps a request iterator: counts messages and snapshots the first one."""

    __slots__ = ("_iterator", "cls", "count", "raw")

    def __init__(self, iterator: Iterator[Any]) -> None:
        self._iterator = iterator
        self.count = 0
        self.raw: bytes | None = None
        self.cls: type[message.Message] | None = None

    def __iter__(self) -> _RequestCounter:
        return self

    def argument(self, context: grpc.ServicerContext) -> Any:
        """The handler's argument: this iterator."""
        return self

    def __next__(self) -> Any:
        item = next(self._iterator)
        if self.count == 0 and isinstance(item, message.Message):
            self.raw = item.SerializeToString()
            self.cls = type(item)
        self.count += 1
        return item

    next = __next__


RequestSide = _UnaryRequest | _RequestCounter


class AuditInterceptor(AuditInterceptorBase, grpc.ServerInterceptor):
    __doc__ = AuditInterceptorBase.__doc__

    # --- grpc.ServerInterceptor --------------------------------------------

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method: str = handler_call_details.method
        try:
            handler = continuation(handler_call_details)
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

    def _rejecting(self, info: MethodInfo, code: grpc.StatusCode, details: str) -> Handler:
        def behavior(request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> None:
            started = time.time_ns()
            context.set_code(code)
            context.set_details(details)
            with contextlib.suppress(AuditUnavailableError):
                self._record(info, context, started, None, None, False, None, None, 0, None, 0)
            context.abort(code, details)

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

    def _parse(
        self, info: MethodInfo, deserialize: Deserializer, raw: bytes, context: grpc.ServicerContext
    ) -> Any:
        if deserialize is None:
            return raw
        try:
            return deserialize(raw)
        except Exception:
            # gRPC itself would answer INTERNAL without ever calling a handler;
            # a malformed request is the client's fault, and it must be audited.
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {info.method} request message",
            )

    @staticmethod
    def _serialize_unary(result: Any, serialize: Serializer, context: Any) -> bytes | None:
        if result is None:
            if context.code() in (None, grpc.StatusCode.OK):
                # gRPC would answer INTERNAL "Failed to serialize response!"; say why.
                context.set_code(grpc.StatusCode.INTERNAL)
                context.set_details("the handler returned no response")
            return None
        return serialize(result) if serialize is not None else result

    def _end(
        self,
        info: MethodInfo,
        context: grpc.ServicerContext,
        started: int,
        scope: _CallScope,
        error: BaseException | None,
        request: RequestSide,
        response: Any,
        response_count: int,
    ) -> None:
        # Not active before the status is sent: the client cancelled or its deadline
        # passed. The response is the handler's own object: the call is over, nothing
        # else touches it, and the background worker needs no parse to read it.
        self._record(
            info,
            context,
            started,
            scope,
            error,
            not context.is_active(),
            request.raw,
            request.cls,
            request.count,
            response,
            response_count,
        )

    def _admit(self, context: grpc.ServicerContext) -> None:
        """Refuse the call before it runs when its event could not be kept."""
        try:
            self._core.admit()
        except AuditUnavailableError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    def _end_failed(
        self,
        info: MethodInfo,
        context: grpc.ServicerContext,
        started: int,
        scope: _CallScope,
        error: BaseException,
        request: RequestSide,
    ) -> None:
        """Record a call whose handler raised; a refusing sink cannot make it worse."""
        with contextlib.suppress(AuditUnavailableError):
            self._end(info, context, started, scope, error, request, None, 0)

    def _unary_response(
        self,
        info: MethodInfo,
        inner: Callable[[Any, Any], Any],
        serialize: Serializer,
        take_request: Callable[[Any], RequestSide],
    ) -> Callable[[Any, grpc.ServicerContext], bytes | None]:
        """The behavior of a unary-response call (unary-unary or stream-unary)."""

        def behavior(argument: Any, context: grpc.ServicerContext) -> bytes | None:
            started = time.time_ns()
            scope, token = enter_scope()
            request = take_request(argument)
            try:
                self._admit(context)
                result = inner(request.argument(context), context)
                response = self._serialize_unary(result, serialize, context)
            except BaseException as exc:
                exit_scope(token)
                self._end_failed(info, context, started, scope, exc, request)
                raise
            exit_scope(token)
            try:
                self._end(
                    info, context, started, scope, None, request, result, int(response is not None)
                )
            except AuditUnavailableError as exc:
                context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            return response

        return behavior

    def _stream_response(
        self,
        info: MethodInfo,
        inner: Callable[[Any, Any], Any],
        serialize: Serializer,
        take_request: Callable[[Any], RequestSide],
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        """The behavior of a server-streaming call (unary-stream or stream-stream)."""

        def relay(
            responses: Iterator[Any],
            context: grpc.ServicerContext,
            started: int,
            scope: _CallScope,
            request: RequestSide,
        ) -> Iterator[Any]:
            count = 0
            last: Any = None
            error: BaseException | None = None
            try:
                while True:
                    token = _SCOPE.set(scope)  # generator bodies run at each next()
                    try:
                        last = next(responses)
                    except StopIteration:
                        break
                    finally:
                        _SCOPE.reset(token)
                    count += 1
                    yield serialize(last) if serialize is not None else last
            except BaseException as exc:  # GeneratorExit too: the client went away
                error = exc
                raise
            finally:
                with contextlib.suppress(AuditUnavailableError):
                    self._end(info, context, started, scope, error, request, last, count)

        def behavior(argument: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.time_ns()
            scope, token = enter_scope()
            request = take_request(argument)
            try:
                self._admit(context)
                responses = iter(inner(request.argument(context), context))
            except BaseException as exc:
                exit_scope(token)
                self._end_failed(info, context, started, scope, exc, request)
                raise
            exit_scope(token)
            return relay(responses, context, started, scope, request)

        return behavior

    def _unary_unary(self, info: MethodInfo, handler: Handler) -> Handler:
        behavior = self._unary_response(
            info,
            handler.unary_unary,
            handler.response_serializer,
            self._take_unary(info, handler.request_deserializer),
        )
        return grpc.unary_unary_rpc_method_handler(behavior)

    def _unary_stream(self, info: MethodInfo, handler: Handler) -> Handler:
        behavior = self._stream_response(
            info,
            handler.unary_stream,
            handler.response_serializer,
            self._take_unary(info, handler.request_deserializer),
        )
        return grpc.unary_stream_rpc_method_handler(behavior)

    def _stream_unary(self, info: MethodInfo, handler: Handler) -> Handler:
        behavior = self._unary_response(
            info, handler.stream_unary, handler.response_serializer, _RequestCounter
        )
        return grpc.stream_unary_rpc_method_handler(
            behavior, request_deserializer=handler.request_deserializer
        )

    def _stream_stream(self, info: MethodInfo, handler: Handler) -> Handler:
        behavior = self._stream_response(
            info, handler.stream_stream, handler.response_serializer, _RequestCounter
        )
        return grpc.stream_stream_rpc_method_handler(
            behavior, request_deserializer=handler.request_deserializer
        )

    def _take_unary(
        self, info: MethodInfo, deserialize: Deserializer
    ) -> Callable[[bytes], RequestSide]:
        expected = info.request_class or message_class_of(deserialize)

        def parse(raw: bytes, context: grpc.ServicerContext) -> Any:
            return self._parse(info, deserialize, raw, context)

        return lambda raw: _UnaryRequest(raw, expected, parse)
