"""`AuditInterceptor`: the audit interceptor for `grpc.server` (thread pool) servers."""

from __future__ import annotations

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
from auditline.interceptor._methods import MethodInfo, method_info

__all__ = ["AuditInterceptor"]

Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None


def _message_class(
    deserializer: Deserializer, info: MethodInfo, request: bool
) -> type[message.Message] | None:
    known = info.request_class if request else info.response_class
    if known is not None:
        return known
    owner = getattr(deserializer, "__self__", None)  # `Message.FromString` is a bound method
    return owner if isinstance(owner, type) and issubclass(owner, message.Message) else None


class _RequestCounter:
    """Wraps a request iterator: counts messages and snapshots the first one."""

    __slots__ = ("_iterator", "count", "first")

    def __init__(self, iterator: Iterator[Any]) -> None:
        self._iterator = iterator
        self.count = 0
        self.first: bytes | None = None

    def __iter__(self) -> _RequestCounter:
        return self

    def __next__(self) -> Any:
        item = next(self._iterator)
        if self.count == 0 and isinstance(item, message.Message):
            self.first = item.SerializeToString()
        self.count += 1
        return item

    next = __next__


class AuditInterceptor(AuditInterceptorBase, grpc.ServerInterceptor):  # type: ignore[misc]
    __doc__ = AuditInterceptorBase.__doc__

    # --- grpc.ServerInterceptor --------------------------------------------

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
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
                method_info(method, known=False), grpc.StatusCode.UNIMPLEMENTED, "Method not found!"
            )
        return self._cached(method, handler, self._wrap)

    # --- recording ------------------------------------------------------------

    def _finish(
        self,
        info: MethodInfo,
        context: grpc.ServicerContext,
        started_ns: int,
        scope: _CallScope | None,
        error: BaseException | None,
        **capture: Any,
    ) -> None:
        # Not active before the status is sent: the client cancelled or its deadline passed.
        self._record(
            info,
            context,
            started_ns,
            scope,
            error,
            ended_by_client=not context.is_active(),
            **capture,
        )

    def _finish_or_abort(
        self, info: MethodInfo, context: grpc.ServicerContext, *args: Any, **capture: Any
    ) -> None:
        """Finish a successful call; in fail-closed mode a sink failure fails it."""
        try:
            self._finish(info, context, *args, **capture)
        except AuditUnavailableError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    def _finish_quietly(self, *args: Any, **capture: Any) -> None:
        """Finish a call that already failed; a sink failure cannot make it worse."""
        try:
            self._finish(*args, **capture)
        except AuditUnavailableError:
            pass

    def _rejecting(
        self, info: MethodInfo, code: grpc.StatusCode, details: str
    ) -> grpc.RpcMethodHandler:
        def behavior(request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> None:
            started = time.time_ns()
            context.set_code(code)
            context.set_details(details)
            self._finish_quietly(
                info,
                context,
                started,
                None,
                None,
                request=None,
                request_class=None,
                request_count=0,
                response=None,
                response_class=None,
                response_count=0,
            )
            context.abort(code, details)

        return grpc.stream_stream_rpc_method_handler(behavior)

    # --- wrapping the four call shapes -------------------------------------

    def _wrap(self, info: MethodInfo, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
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
    def _serialize_unary(
        result: Any, serialize: Serializer, context: grpc.ServicerContext
    ) -> bytes | None:
        if result is None:
            if context.code() in (None, grpc.StatusCode.OK):
                # gRPC would answer INTERNAL "Failed to serialize response!"; say why.
                context.set_code(grpc.StatusCode.INTERNAL)
                context.set_details("the handler returned no response")
            return None
        return serialize(result) if serialize is not None else result

    def _unary_unary(
        self, info: MethodInfo, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        inner = handler.unary_unary
        deserialize: Deserializer = handler.request_deserializer
        serialize: Serializer = handler.response_serializer
        request_class = _message_class(deserialize, info, request=True)
        response_class = info.response_class

        def behavior(raw: bytes, context: grpc.ServicerContext) -> bytes | None:
            started = time.time_ns()
            scope, token = enter_scope()
            response: bytes | None = None
            try:
                result = inner(self._parse(info, deserialize, raw, context), context)
                response = self._serialize_unary(result, serialize, context)
            except BaseException as exc:
                exit_scope(token)
                self._finish_quietly(
                    info,
                    context,
                    started,
                    scope,
                    exc,
                    request=raw,
                    request_class=request_class,
                    request_count=1,
                    response=None,
                    response_class=response_class,
                    response_count=0,
                )
                raise
            exit_scope(token)
            self._finish_or_abort(
                info,
                context,
                started,
                scope,
                None,
                request=raw,
                request_class=request_class,
                request_count=1,
                response=response,
                response_class=response_class,
                response_count=int(response is not None),
            )
            return response

        return grpc.unary_unary_rpc_method_handler(behavior)

    def _relay(
        self,
        responses: Iterator[Any],
        serialize: Serializer,
        scope: _CallScope,
        on_end: Callable[[bytes | None, int, BaseException | None], None],
    ) -> Iterator[Any]:
        """Yield the handler's responses (serialized), counting them; report the end."""
        count = 0
        last: bytes | None = None
        try:
            while True:
                token = _SCOPE.set(scope)  # generator bodies run at each next()
                try:
                    item = next(responses)
                except StopIteration:
                    break
                finally:
                    _SCOPE.reset(token)
                last = serialize(item) if serialize is not None else item
                count += 1
                yield last
        except BaseException as exc:  # GeneratorExit too: the client went away
            on_end(last, count, exc)
            raise
        on_end(last, count, None)

    def _unary_stream(
        self, info: MethodInfo, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        inner = handler.unary_stream
        deserialize: Deserializer = handler.request_deserializer
        serialize: Serializer = handler.response_serializer
        request_class = _message_class(deserialize, info, request=True)
        response_class = info.response_class

        def behavior(raw: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.time_ns()
            scope, token = enter_scope()

            def on_end(last: bytes | None, count: int, error: BaseException | None) -> None:
                self._finish_quietly(
                    info,
                    context,
                    started,
                    scope,
                    error,
                    request=raw,
                    request_class=request_class,
                    request_count=1,
                    response=last,
                    response_class=response_class,
                    response_count=count,
                )

            try:
                responses = inner(self._parse(info, deserialize, raw, context), context)
            except BaseException as exc:
                exit_scope(token)
                on_end(None, 0, exc)
                raise
            exit_scope(token)
            return self._relay(iter(responses), serialize, scope, on_end)

        return grpc.unary_stream_rpc_method_handler(
            behavior, request_deserializer=None, response_serializer=None
        )

    def _stream_unary(
        self, info: MethodInfo, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        inner = handler.stream_unary
        deserialize: Deserializer = handler.request_deserializer
        serialize: Serializer = handler.response_serializer
        request_class = _message_class(deserialize, info, request=True)
        response_class = info.response_class

        def behavior(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            started = time.time_ns()
            scope, token = enter_scope()
            counter = _RequestCounter(requests)
            response: bytes | None = None
            try:
                result = inner(counter, context)
                response = self._serialize_unary(result, serialize, context)
            except BaseException as exc:
                exit_scope(token)
                self._finish_quietly(
                    info,
                    context,
                    started,
                    scope,
                    exc,
                    request=counter.first,
                    request_class=request_class,
                    request_count=counter.count,
                    response=None,
                    response_class=response_class,
                    response_count=0,
                )
                raise
            exit_scope(token)
            self._finish_or_abort(
                info,
                context,
                started,
                scope,
                None,
                request=counter.first,
                request_class=request_class,
                request_count=counter.count,
                response=response,
                response_class=response_class,
                response_count=int(response is not None),
            )
            return response

        return grpc.stream_unary_rpc_method_handler(
            behavior, request_deserializer=deserialize, response_serializer=None
        )

    def _stream_stream(
        self, info: MethodInfo, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        inner = handler.stream_stream
        deserialize: Deserializer = handler.request_deserializer
        serialize: Serializer = handler.response_serializer
        request_class = _message_class(deserialize, info, request=True)
        response_class = info.response_class

        def behavior(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.time_ns()
            scope, token = enter_scope()
            counter = _RequestCounter(requests)

            def on_end(last: bytes | None, count: int, error: BaseException | None) -> None:
                self._finish_quietly(
                    info,
                    context,
                    started,
                    scope,
                    error,
                    request=counter.first,
                    request_class=request_class,
                    request_count=counter.count,
                    response=last,
                    response_class=response_class,
                    response_count=count,
                )

            try:
                responses = inner(counter, context)
            except BaseException as exc:
                exit_scope(token)
                on_end(None, 0, exc)
                raise
            exit_scope(token)
            return self._relay(iter(responses), serialize, scope, on_end)

        return grpc.stream_stream_rpc_method_handler(
            behavior, request_deserializer=deserialize, response_serializer=None
        )
