"""`AuditInterceptor`: the audit interceptor for `grpc.server` (thread pool) servers."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
from google.protobuf import message

from auditline.interceptor._base import AuditInterceptorBase, serialize_unary
from auditline.interceptor._call_state import CallState
from auditline.interceptor._methods import MethodInfo, message_class_of, method_info
from auditline.interceptor._scope import SCOPE
from auditline.interceptor._status import fit_for_clients, uncaught_details
from auditline.interceptor._sync_non_blocking import non_blocking_behavior
from auditline.interceptor._types import Sink
from auditline.interceptor._unary_request import RequestWait, Unreached, first_request

__all__ = ["AuditInterceptor"]

# grpc.RpcMethodHandler: its stubs type messages, while these wrappers pass bytes.
Handler = Any
Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None


Parse = Callable[[bytes, grpc.ServicerContext], Any]

# A client sends its request as it opens the call: 30 s is far past an honest one's
# delay, and bounds how long one that never sends it holds a server thread.
DEFAULT_REQUEST_TIMEOUT = 30.0
_REQUEST_TIMEOUT_DOC = """
        request_timeout: a call to a unary-request method whose request message has
            not come this many seconds after a server thread began to wait for it is
            cancelled (its client sees CANCELLED) and recorded, so that clients cannot
            hold the server's threads by never sending it (default 30 s; None: no
            bound). Calls that wait after `close` are not bounded.
    """


class _RequestCounter:
    """Wraps a request iterator: parses each message and records it."""

    __slots__ = ("_call", "_context", "_iterator", "_parse")

    def __init__(
        self,
        iterator: Iterator[bytes],
        call: CallState,
        parse: Parse,
        context: grpc.ServicerContext,
    ) -> None:
        self._iterator = iterator
        self._call = call
        self._parse = parse
        self._context = context

    def __iter__(self) -> _RequestCounter:
        return self

    def __next__(self) -> Any:
        raw = next(self._iterator)
        try:
            item = self._parse(raw, self._context)
        except BaseException:
            self._call.on_receive(raw, None)  # malformed or too large: received all the same
            raise
        self._call.on_receive(raw, item)
        return item

    next = __next__


def _argument(
    argument: Any, streaming: bool, call: CallState, parse: Parse, context: grpc.ServicerContext
) -> Any:
    """The handler's argument: the request iterator, or the unary request parsed (and
    recorded as received first, even if it cannot be parsed)."""
    if streaming:
        return _RequestCounter(argument, call, parse, context)
    call.on_receive(argument, None)
    request = parse(argument, context)
    if isinstance(request, message.Message):
        call.cls = type(request)
    return request


def _call_state(context: grpc.ServicerContext) -> Any:
    """The call's state in gRPC's sync server, the only place that tells how the call
    terminated (`client`, `callbacks`): read, never written. None when a version of
    grpcio lacks them: the record is then settled when the handler returns (the interop
    suite in tests/ shows the difference)."""
    state = getattr(context, "_state", None)
    if state is None or not hasattr(state, "client") or not hasattr(state, "callbacks"):
        return None
    return state


def _aborted(context: grpc.ServicerContext) -> bool:
    """Whether the handler ended the call with `context.abort` (whose exception is
    gRPC's, not the application's). Read like `_call_state`; without it, taken as not."""
    return bool(getattr(getattr(context, "_state", None), "aborted", False))


def _cancelled(state: Any) -> bool | None:
    """None while the call runs; then whether it ended cancelled (by the client or its
    deadline) rather than with the status the server sent."""
    if state.callbacks is not None:  # emptied when the call has terminated
        return None
    return bool(state.client == "cancelled")


class AuditInterceptor(AuditInterceptorBase, grpc.ServerInterceptor):
    __doc__ = (AuditInterceptorBase.__doc__ or "").rstrip() + _REQUEST_TIMEOUT_DOC

    def __init__(
        self,
        sink: Sink,
        *,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
        **options: Any,
    ) -> None:
        super().__init__(sink, **options)
        self._request_wait = RequestWait(request_timeout) if request_timeout is not None else None

    def close(self, timeout: float | None = 10.0) -> None:
        if self._request_wait is not None:
            self._request_wait.close(timeout)
        super().close(timeout)

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
            call = CallState(info, None)
            refused = self._admission()
            call.admitted = not refused
            answer = (grpc.StatusCode.UNAVAILABLE, refused) if refused else (code, details)
            context.set_code(answer[0])
            context.set_details(answer[1])
            self._end(call, context, None)
            context.abort(*answer)

        return grpc.stream_stream_rpc_method_handler(behavior)

    def _end(
        self,
        call: CallState,
        context: grpc.ServicerContext,
        error: BaseException | None,
        *,
        answering: bool = True,
    ) -> None:
        """Record a finished call. Fail-closed, for an admitted call whose answer is
        still to be sent (`answering`): raise the UNAVAILABLE answer if its events
        cannot be kept.

        Otherwise the record is settled when the call terminates: a client that
        cancels (or whose deadline passes) while the status is on its way sees
        CANCELLED (DEADLINE_EXCEEDED), and so does the log. Fail-closed, the event
        must be durable before the status goes out, so it says what the handler
        answered."""
        code = context.code()  # type: ignore[attr-defined]
        if code is not None and not isinstance(code, grpc.StatusCode):
            # A number: the sync server sends the client UNKNOWN for it (the asyncio
            # one takes numbers), and the log said the number's code (found by a
            # review helper).
            context.set_code(grpc.StatusCode.UNKNOWN)
        if answering:
            if error is not None and not _aborted(context) and not context.details():  # type: ignore[attr-defined]
                # gRPC would send the exception's own message, which may hold
                # secrets (and, long, make the client see another code): the client
                # is told what the log says, the type only.
                context.set_details(uncaught_details(error))
            fit_for_clients(context)
        state = None if self._fail_closed else _call_state(context)
        record = self._core.capture(
            call=call,
            context=context,
            error=error,
            # Cancelled before the status is sent: by the client, or its deadline
            # passed (read without the call's lock: the outcome, asked once the call
            # has terminated, has the last word).
            ended_by_client=state.client == "cancelled"
            if state is not None
            else not context.is_active(),
            outcome=functools.partial(_cancelled, state) if state is not None else None,
        )
        if not self._fail_closed or not call.admitted:
            # A refused call's event: kept if it can be, else counted. Handed on when
            # the call has ended, once it is known whether the client saw the status.
            self._core.submit(record, wait=False, when_ended=context.add_callback)
            return
        reason = self._keep(record)
        if reason and answering:
            context.set_trailing_metadata(())  # the rich details of the replaced answer
            context.abort(grpc.StatusCode.UNAVAILABLE, reason)

    def _parser(self, info: MethodInfo, deserialize: Deserializer) -> Parse:
        """How a method's requests are parsed: over-large and malformed ones refused."""
        limit = self._core.config.max_message_bytes

        def parse(raw: bytes, context: grpc.ServicerContext) -> Any:
            if limit is not None and len(raw) > limit:
                refusal = self._message_refusal(raw)
                assert refusal is not None
                context.abort(refusal.code, refusal.details)
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

        return parse

    def _start(self, call: CallState, context: grpc.ServicerContext) -> None:
        """Before the handler: admission, then the limits on what the caller sent."""
        refused = self._admission()
        if refused:
            context.abort(grpc.StatusCode.UNAVAILABLE, refused)
        call.admitted = True
        if self._core.config.max_metadata_bytes is None:
            return
        refusal = self._metadata_refusal(context.invocation_metadata())
        if refusal is not None:
            context.abort(refusal.code, refusal.details)

    def _begin(
        self,
        argument: Any,
        streaming: bool,
        call: CallState,
        parse: Parse,
        context: grpc.ServicerContext,
    ) -> Any:
        """The handler's argument, once the call is admitted. A unary request is read
        first (`first_request`), before admission, as when gRPC read it."""
        if not streaming:
            argument = first_request(argument, context, call.info.full_method, self._request_wait)
        self._start(call, context)
        return _argument(argument, streaming, call, parse, context)

    def _unreached(self, call: CallState, context: grpc.ServicerContext) -> NoReturn:
        """End and record a call cancelled because its request did not come in time.
        The server cancelled it, not the client: the record says CANCELLED, and why."""
        assert self._request_wait is not None
        details = f"no request message within {self._request_wait.bound:g} s"
        context.cancel()  # done already, unless the watch has only just taken the call
        context.set_code(grpc.StatusCode.CANCELLED)
        context.set_details(details)
        record = self._core.capture(call=call, context=context, error=None, ended_by_client=False)
        # Never admitted, nor answered: kept if it can be, else counted (as a refusal).
        self._core.submit(record, wait=False)
        # gRPC's way out for a handler; no status reaches the client of a cancelled call.
        context.abort(grpc.StatusCode.CANCELLED, details)

    def _unary_response(
        self,
        info: MethodInfo,
        inner: Callable[[Any, Any], Any],
        serialize: Serializer,
        parse: Parse,
        streaming_request: bool,
    ) -> Callable[[Any, grpc.ServicerContext], bytes | None]:
        """The behavior of a unary-response call (unary-unary or stream-unary)."""

        def behavior(argument: Any, context: grpc.ServicerContext) -> bytes | None:
            call = CallState(info, info.request_class)
            call.unary_response = True
            token = SCOPE.set(call)
            try:
                request = self._begin(argument, streaming_request, call, parse, context)
                result = inner(request, context)
                response = serialize_unary(result, serialize, context)
            except Unreached:
                SCOPE.reset(token)
                self._unreached(call, context)
            except BaseException as exc:
                SCOPE.reset(token)
                self._end(call, context, exc)
                raise
            SCOPE.reset(token)
            if response is not None:
                call.on_send(result)
            self._end(call, context, None)
            return response

        return behavior

    def _stream_response(
        self,
        info: MethodInfo,
        inner: Callable[[Any, Any], Any],
        serialize: Serializer,
        parse: Parse,
        streaming_request: bool,
    ) -> Callable[..., Any]:
        """The behavior of a server-streaming call (unary-stream or stream-stream)."""

        def relay(
            responses: Iterator[Any], context: grpc.ServicerContext, call: CallState
        ) -> Iterator[Any]:
            error: BaseException | None = None
            try:
                while True:
                    token = SCOPE.set(call)  # generator bodies run at each next()
                    try:
                        item = next(responses)
                    except StopIteration:
                        break
                    finally:
                        SCOPE.reset(token)
                    data = serialize(item) if serialize is not None else item
                    # Counted once it can be sent (one that could not be serialized was
                    # counted; found by a review helper), and before it is: when the
                    # client cancels as it arrives, gRPC may never come back here.
                    # Not once the client is gone: gRPC sends it nowhere.
                    if context.is_active():
                        call.on_send(item)
                    yield data
            except BaseException as exc:  # GeneratorExit too: the client went away
                error = exc
                raise
            finally:
                # The client is gone: there is no answer left to replace.
                self._end(call, context, error, answering=not isinstance(error, GeneratorExit))

        if getattr(inner, "experimental_non_blocking", False):
            return non_blocking_behavior(
                self,
                info=info,
                inner=inner,
                serialize=serialize,
                parse=parse,
                streaming_request=streaming_request,
            )

        def behavior(argument: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = CallState(info, info.request_class)
            token = SCOPE.set(call)
            try:
                request = self._begin(argument, streaming_request, call, parse, context)
                responses = iter(inner(request, context))
            except Unreached:
                SCOPE.reset(token)
                self._unreached(call, context)
            except BaseException as exc:
                SCOPE.reset(token)
                self._end(call, context, exc)
                raise
            SCOPE.reset(token)
            return relay(responses, context, call)

        return behavior

    # --- wrapping the four call shapes -------------------------------------

    def _wrap(self, info: MethodInfo, handler: Handler) -> Handler:
        serialize: Serializer = handler.response_serializer
        deserialize: Deserializer = handler.request_deserializer
        if info.request_class is None:
            info = dataclasses.replace(info, request_class=message_class_of(deserialize))

        parse = self._parser(info, deserialize)
        # The wrapped handlers take and give bytes: the interceptor parses requests
        # itself (to audit the malformed and the oversized) and serializes responses.
        # Unary-request methods are served as request-streaming ones: gRPC then runs
        # the behavior at once and it reads the one request itself, so that every
        # call reaches it (`_unary_request`).
        if handler.unary_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary_response(info, handler.unary_unary, serialize, parse, False)
            )
        if handler.unary_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream_response(info, handler.unary_stream, serialize, parse, False)
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary_response(info, handler.stream_unary, serialize, parse, True)
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream_response(info, handler.stream_stream, serialize, parse, True)
        )
