"""The constructor, limits and lifecycle shared by `AuditInterceptor` and
`AsyncAuditInterceptor`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc

from auditline.interceptor._core import AuditCore
from auditline.interceptor._methods import MethodInfo, method_info
from auditline.interceptor._policy import AuditPolicy
from auditline.interceptor._record import CallRecord, make_config
from auditline.interceptor._summaries import SummaryPolicy
from auditline.interceptor._types import (
    AuditUnavailableError,
    Metadata,
    PrincipalResolver,
    Sink,
)

__all__ = ["AuditInterceptorBase", "Refusal"]

_HANDLER_CACHE_SIZE = 4096
# What HTTP/2 (RFC 7540 6.5.2) counts for each header besides its name and value.
_HEADER_OVERHEAD = 32


class Refusal(Exception):
    """A limit the interceptor enforces itself: the code and message to answer with."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def serialize_unary(
    result: Any, serialize: Callable[[Any], bytes] | None, context: Any
) -> bytes | None:
    """A unary handler's response as bytes; None when it returned none, and then, unless
    it set an error, INTERNAL with a reason (gRPC would say "Failed to serialize
    response!"). The code may have been set as a StatusCode or as a number."""
    if result is None:
        code = context.code()
        if code is None or code == grpc.StatusCode.OK or code == 0:
            context.set_code(grpc.StatusCode.INTERNAL)
            context.set_details("the handler returned no response")
        return None
    return serialize(result) if serialize is not None else result


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
        unauthenticated_max_body_bytes: the same for calls without a principal
            (default: `max_body_bytes`; `auditline serve` uses 4 KB).
        max_message_bytes: request messages larger than this are answered
            RESOURCE_EXHAUSTED (and recorded) before the handler sees them; set the
            server's `grpc.max_receive_message_length` above it.
        max_metadata_bytes: the same for request metadata (as HTTP/2 counts it); set
            the server's `grpc.max_metadata_size` above it.
        summaries: past this rate per source address, unauthenticated calls are
            counted in a `CallsSummarized` event per interval instead of one event
            each (default: every call is recorded).
        policy: what to record per service or method (`AuditPolicy`): every call,
            only the denied or the allowed ones, or a summary; the calls it leaves
            out are counted in a `CallsSummarized` event per interval (default: every
            call is recorded).
        node_id: recorded in every event.
        fail_closed: a call completes only once its events are durable in the sink;
            otherwise it is answered UNAVAILABLE (and refused before it runs when
            the sink says it cannot keep events).
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
        unauthenticated_max_body_bytes: int | None = None,
        max_message_bytes: int | None = None,
        max_metadata_bytes: int | None = None,
        summaries: SummaryPolicy | None = None,
        policy: AuditPolicy | None = None,
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
                unauthenticated_max_body_bytes=unauthenticated_max_body_bytes,
                max_message_bytes=max_message_bytes,
                max_metadata_bytes=max_metadata_bytes,
                summaries=summaries,
                policy=policy,
                fail_closed=fail_closed,
            ),
        )
        self._fail_closed = fail_closed
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

    @property
    def summarized_calls(self) -> int:
        """How many calls were counted in summaries rather than recorded one by one."""
        return sum(summarizer.summarized for summarizer in self._core.counting.summarizers)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the events of every call finished so far reached the sink."""
        return self._core.flush(timeout)

    def stopping(self, grace: float | None = None) -> None:
        """Call just before `server.stop(grace)`: the calls still running once the
        grace has passed are cancelled by the server, and their clients see
        UNAVAILABLE ("Cancelling all calls"). Recorded so, not as the clients' own
        cancels."""
        self._core.stopping(grace)

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush, write the open summaries and stop the background worker; call it
        after the server stopped."""
        self._core.close(timeout)

    # --- admission and limits ------------------------------------------------------

    def _admission(self) -> str:
        """Ask the sink whether a call may run: "" when it may, else why not."""
        try:
            self._core.admit()
        except AuditUnavailableError as exc:
            return str(exc) or "the audit log cannot record calls"
        return ""

    def _metadata_refusal(self, metadata: Metadata | None) -> Refusal | None:
        limit = self._core.config.max_metadata_bytes
        if limit is None or not metadata:
            return None
        size = sum(len(key) + len(value) + _HEADER_OVERHEAD for key, value in metadata)
        if size <= limit:
            return None
        return Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the request metadata is {size} bytes; the limit is {limit}",
        )

    def _message_refusal(self, raw: bytes) -> Refusal | None:
        limit = self._core.config.max_message_bytes
        if limit is None or len(raw) <= limit:
            return None
        return Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the request message is {len(raw)} bytes; the limit is {limit}",
        )

    # --- handing records on ----------------------------------------------------------

    def _queue(self, record: CallRecord) -> None:
        self._core.submit(record, wait=False)

    def _keep(self, record: CallRecord) -> str:
        """Fail-closed: make the record durable; on failure, queue what the client will
        see instead and return the message of that UNAVAILABLE answer ("" when kept)."""
        try:
            self._core.submit(record, wait=True)
        except Exception as exc:
            return self._unkept(record, exc)
        return ""

    async def _keep_async(self, record: CallRecord) -> str:
        """`_keep` for the asyncio flavour: its event loop goes on meanwhile. A call
        cancelled while it waits (its client gone, its deadline passed) leaves the
        keeping to finish without it: if its events are then refused, the UNAVAILABLE
        record is still queued, as `_keep` would."""
        try:
            await self._core.keep(record, refused_later=functools.partial(self._unkept, record))
        except Exception as exc:
            return self._unkept(record, exc)
        return ""

    def _unkept(self, record: CallRecord, exc: Exception) -> str:
        reason = str(exc) or "the audit log cannot record this call"
        self._core.submit(self._core.unavailable(record, reason), wait=False)
        return reason
