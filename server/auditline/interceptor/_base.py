"""The constructor and lifecycle shared by `AuditInterceptor` and `AsyncAuditInterceptor`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from google.protobuf import message

from auditline.interceptor._core import (
    AuditCore,
    PrincipalResolver,
    Sink,
    _CallScope,
    make_config,
)
from auditline.interceptor._methods import MethodInfo, method_info

__all__ = ["AuditInterceptorBase"]

_HANDLER_CACHE_SIZE = 4096


class AuditInterceptorBase:
    """Records every call as an `ApiEvent` handed to `sink`.

    Put the interceptor first in the server's interceptor list so that it also
    sees calls that inner interceptors reject and calls to methods nobody serves.

    Args:
        sink: receives each finished event, from one background thread, in order.
        principal: names the caller from the call's metadata, peer and TLS identity,
            when the handler (or an inner interceptor) did not call `set_principal`.
        trusted_proxies: networks (CIDR) whose `x-forwarded-for` header is believed.
        hmac_key: the key of redaction mode HMAC_SHA256; without one, such fields
            are masked instead.
        metadata_allowlist: request metadata keys to record (credentials, cookies
            and `-bin` headers never are).
        max_body_bytes: request parameters and response bodies larger than this
            (as JSON) are truncated and flagged (default 100 KB, as CloudTrail).
        node_id: recorded in every event.
        fail_closed: emit each event before the call completes and fail the call
            with UNAVAILABLE when the sink cannot take it.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        principal: PrincipalResolver | None = None,
        trusted_proxies: Iterable[str] = (),
        hmac_key: bytes | None = None,
        metadata_allowlist: Sequence[str] = (),
        max_body_bytes: int = 100_000,
        node_id: str = "",
        fail_closed: bool = False,
    ) -> None:
        self._core = AuditCore(
            sink,
            make_config(
                node_id=node_id,
                principal=principal,
                trusted_proxies=trusted_proxies,
                hmac_key=hmac_key,
                metadata_allowlist=metadata_allowlist,
                max_body_bytes=max_body_bytes,
                fail_closed=fail_closed,
            ),
        )
        # The wrapped handler of each method, with the handler it wraps. Inner
        # interceptors that build a new handler per call get it re-wrapped per call;
        # method names beyond the bound (which clients choose) are not kept.
        self._handlers: dict[str, tuple[Any, Any]] = {}

    def _cached(self, method: str, handler: Any, wrap: Callable[[MethodInfo, Any], Any]) -> Any:
        """The wrapped handler, made once per method while its handler stays the same."""
        entry = self._handlers.get(method)
        if entry is not None and entry[0] is handler:
            return entry[1]
        wrapped = wrap(method_info(method), handler)
        if entry is not None or len(self._handlers) < _HANDLER_CACHE_SIZE:
            self._handlers[method] = (handler, wrapped)
        return wrapped

    @property
    def sink_errors(self) -> int:
        """How many events the sink refused so far."""
        return self._core.sink_errors

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the events of every call finished so far reached the sink."""
        return self._core.flush(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush and stop the background worker; call it after the server stopped."""
        self._core.close(timeout)

    def _record(
        self,
        info: MethodInfo,
        context: Any,
        started_ns: int,
        scope: _CallScope | None,
        error: BaseException | None,
        ended_by_client: bool,
        request: bytes | message.Message | None,
        request_class: type[message.Message] | None,
        request_count: int,
        response: bytes | message.Message | None,
        response_count: int,
    ) -> None:
        """Capture a finished call and hand its record on.

        Raises `AuditUnavailableError` only in fail-closed mode.
        """
        self._core.submit(
            self._core.capture(
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
        )
