"""The audit wrapper of a sync server's streaming handler that sends through a callback
and gives its thread back at once (gRPC's `experimental_non_blocking`, which the health
service's Watch is). Wrapped as a blocking stream, each open stream held one of the
server's threads, and a few callers that never closed theirs stopped the server."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

import grpc

from auditline.interceptor._call_state import CallState
from auditline.interceptor._methods import MethodInfo
from auditline.interceptor._scope import SCOPE
from auditline.interceptor._unary_request import Unreached

__all__ = ["non_blocking_behavior"]


class _Recording(Protocol):
    """What of `AuditInterceptor` the wrapper uses."""

    def _begin(
        self, argument: Any, streaming: bool, call: CallState, parse: Any, context: Any
    ) -> Any: ...

    def _unreached(self, call: CallState, context: grpc.ServicerContext) -> NoReturn: ...

    def _end(
        self,
        call: CallState,
        context: grpc.ServicerContext,
        error: BaseException | None,
        *,
        answering: bool = True,
    ) -> None: ...


def non_blocking_behavior(
    recording: _Recording,
    *,
    info: MethodInfo,
    inner: Any,
    serialize: Callable[[Any], bytes] | None,
    parse: Any,
    streaming_request: bool,
) -> Callable[..., None]:
    """The wrapped behavior: non-blocking too. The call is recorded when the handler
    (or the client's going, which the handler hears of) ends it with None."""

    def behavior(argument: Any, context: grpc.ServicerContext, send_response_callback: Any) -> None:
        call = CallState(info, info.request_class)
        ended = threading.Lock()

        def send(item: Any) -> None:
            if item is not None:
                if context.is_active():  # else gRPC sends it nowhere
                    call.on_send(item)
                send_response_callback(serialize(item) if serialize is not None else item)
                return
            if not ended.acquire(blocking=False):
                return  # ended already
            # Fail-closed, an answer that cannot be kept becomes UNAVAILABLE: `_end`
            # sets that status (its abort raises), and it is sent here.
            with contextlib.suppress(Exception):
                recording._end(call, context, None)
            send_response_callback(None)

        def terminated() -> None:
            # Ended without the handler ending it (it did not hear the client go):
            # recorded all the same, with no answer left to replace.
            if ended.acquire(blocking=False):
                # Not "the handler had answered OK": it never ended the stream.
                recording._end(call, context, GeneratorExit(), answering=False)

        token = SCOPE.set(call)
        try:
            request = recording._begin(argument, streaming_request, call, parse, context)
            context.add_callback(terminated)
            inner(request, context, send_response_callback=send)
        except Unreached:
            SCOPE.reset(token)
            recording._unreached(call, context)
        except BaseException as exc:
            SCOPE.reset(token)
            if ended.acquire(blocking=False):
                recording._end(call, context, exc)
            raise
        SCOPE.reset(token)

    behavior.experimental_non_blocking = True  # type: ignore[attr-defined]
    behavior.experimental_thread_pool = getattr(  # type: ignore[attr-defined]
        inner, "experimental_thread_pool", None
    )
    return behavior
