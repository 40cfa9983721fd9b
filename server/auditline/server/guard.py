"""The call guard: authentication, role checks and error translation for auditline's API.

An interceptor placed after the audit interceptor. For every method of the
`auditline.*` services except the open ones it requires `authorization: Bearer
<token>`, checks the caller's role against the method, names the caller in the
audit event, and turns `AuditlineError`s into statuses. Health and reflection pass
through untouched.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from auditline.contract import OPEN_METHODS
from auditline.errors import AuditlineError, PermissionDeniedError, UnauthenticatedError
from auditline.interceptor import set_principal
from auditline.server.accounts import ROLE_ADMIN, ROLE_AUDITOR, ROLE_STANDARD, Accounts
from auditline.server.sessions import Caller

__all__ = ["CallGuard", "bearer_token", "current_caller", "recheck_caller"]

_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "auditline_caller", default=None
)
# A server-streaming call's check of its caller again (at most every RECHECK_SECONDS).
_RECHECK: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "auditline_recheck", default=None
)

_ACCOUNT = "/auditline.account.v1."
_AUDIT = "/auditline.audit.v1."
# Methods other roles may call besides admin (who may call everything). The
# services narrow standard accounts further to what their permissions name.
_ALLOWED: dict[str, frozenset[int]] = {
    _ACCOUNT + "AuthService/Logout": frozenset({ROLE_STANDARD, ROLE_AUDITOR}),
    _ACCOUNT + "ServiceAccountService/GetServiceAccount": frozenset({ROLE_STANDARD}),
    _ACCOUNT + "BucketService/ListBuckets": frozenset({ROLE_STANDARD}),
    _ACCOUNT + "BucketService/GetBucket": frozenset({ROLE_STANDARD}),
    _AUDIT + "AuditSettingsService/GetAuditSettings": frozenset({ROLE_AUDITOR}),
    _AUDIT + "ExporterService/GetExporter": frozenset({ROLE_AUDITOR}),
    _AUDIT + "ExporterService/ListExporters": frozenset({ROLE_AUDITOR}),
    _AUDIT + "AuditLogService/ListEvents": frozenset({ROLE_AUDITOR}),
    _AUDIT + "AuditLogService/TailEvents": frozenset({ROLE_AUDITOR}),
    _AUDIT + "AuditLogService/GetEventCatalog": frozenset({ROLE_AUDITOR}),
    _AUDIT + "AuditLogService/GetVerifierKeys": frozenset({ROLE_AUDITOR}),
    _AUDIT + "AuditLogService/QueryEvents": frozenset({ROLE_AUDITOR}),
}


def current_caller() -> Caller:
    """The authenticated caller of the call being served."""
    caller = _CALLER.get()
    if caller is None:
        raise UnauthenticatedError("this method needs an authenticated caller")
    return caller


def recheck_caller() -> None:
    """In a server-streaming call, check its caller again if a second has passed
    (UNAUTHENTICATED, PERMISSION_DENIED if no longer allowed): the guard does before
    each message, and a stream that may send nothing for long (TailEvents with a
    filter nothing matches) does while it waits."""
    recheck = _RECHECK.get()
    if recheck is not None:
        recheck()


def bearer_token(context: grpc.ServicerContext) -> str:
    """The call's `authorization: Bearer` token, or UnauthenticatedError."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    raise UnauthenticatedError(
        "missing `authorization: Bearer <token>` metadata; get a "
        "token from auditline.account.v1.AuthService/Authenticate"
    )


# How often a server-streaming call's caller is checked again, before the next message.
RECHECK_SECONDS = 1.0


class CallGuard(grpc.ServerInterceptor):
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    def _admit(self, method: str, context: grpc.ServicerContext) -> Caller | None:
        if method in OPEN_METHODS:
            return None
        caller = self.accounts.sessions.caller_for_token(bearer_token(context))
        set_principal(caller.display_name, caller.access_key)
        if caller.role != ROLE_ADMIN and caller.role not in _ALLOWED.get(method, ()):
            raise PermissionDeniedError(
                f"{method.rpartition('/')[2]} is not allowed for this service account's role"
            )
        return caller

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith((_ACCOUNT, _AUDIT)):
            return handler
        if handler.unary_unary is not None:
            inner_unary = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    token = _CALLER.set(self._admit(method, context))
                    try:
                        return inner_unary(request, context)
                    finally:
                        _CALLER.reset(token)
                except AuditlineError as error:
                    context.abort_with_status(error.status())

            return handler._replace(unary_unary=unary)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    caller = self._admit(method, context)
                except AuditlineError as error:
                    context.abort_with_status(error.status())
                checked = time.monotonic()

                def recheck() -> None:
                    # A long stream (TailEvents) outlives its caller's session: one
                    # revoked, logged out, disabled or expired gets no more.
                    nonlocal caller, checked
                    if time.monotonic() - checked >= RECHECK_SECONDS:
                        caller = self._admit(method, context)
                        checked = time.monotonic()
                        _CALLER.set(caller)

                responses = inner_stream(request, context)
                while True:
                    # Set around each step, never across a yield: a cancelled call's
                    # generator is closed from another context.
                    token = _CALLER.set(caller)
                    asking = _RECHECK.set(recheck)
                    try:
                        item = next(responses)
                        recheck()
                    except StopIteration:
                        return
                    except AuditlineError as error:
                        context.abort_with_status(error.status())
                    finally:
                        _RECHECK.reset(asking)
                        _CALLER.reset(token)
                    yield item

            return handler._replace(unary_stream=stream)
        # A method that streams its requests would run with no token or role checked:
        # refused until the guard covers that shape (the contract has none today).
        return handler._replace(
            stream_unary=handler.stream_unary and _unguarded,
            stream_stream=handler.stream_stream and _unguarded,
        )


def _unguarded(request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
    context.abort(
        grpc.StatusCode.UNIMPLEMENTED, "the call guard does not cover request-streaming methods"
    )
