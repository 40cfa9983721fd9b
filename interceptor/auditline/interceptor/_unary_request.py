"""How the sync interceptor reads the one request message of a unary-request call.

gRPC's sync server reads a unary method's request before it runs the method's
behavior, and ends on its own, with no behavior run, the calls cancelled or expired
meanwhile (waiting for a thread, or for their request) and those that sent no
message: none of them would reach the interceptor, nor the audit log. So the
interceptor serves unary-request methods as request-streaming ones, its behavior
runs at once, and it reads the request from gRPC's request iterator here.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

__all__ = ["first_request", "no_request_details"]


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
    requests: Iterator[bytes], context: grpc.ServicerContext, full_method: str
) -> bytes:
    """The call's request message, as gRPC would have read it: it raises gRPC's
    `RpcError` if the call was cancelled, by the client or as its deadline passed,
    before or while it waits; a call whose client closed its side without a message is
    aborted UNIMPLEMENTED, as gRPC does."""
    raw = next(requests, None)
    if raw is None:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, no_request_details(context, full_method))
    return raw
