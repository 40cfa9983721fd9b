"""What the interceptor captures of a call (`CallRecord`) and how it is configured
(`AuditConfig`): the data shared by the request path, the worker and the builder."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from google.protobuf import message
from opentelemetry import trace

from auditline.audit.v1 import event_pb2
from auditline.interceptor._methods import MethodInfo
from auditline.interceptor._peer import TrustedProxies
from auditline.interceptor._policy import AuditPolicy
from auditline.interceptor._scope import RelatedEvent
from auditline.interceptor._summaries import SummaryPolicy
from auditline.interceptor._types import Metadata, Principal, PrincipalResolver

__all__ = [
    "AuditConfig",
    "CallRecord",
    "EventIds",
    "make_config",
    "span_ids",
    "traceparent_ids",
]


@dataclasses.dataclass(slots=True, kw_only=True)
class CallRecord:
    """Everything captured about one finished call, before redaction.

    Raw on purpose: the final status is settled, and bodies parsed and redacted,
    by the background worker, off the request path. Never changed once made (a
    settled record is a `dataclasses.replace` copy); not `frozen` only because a
    frozen dataclass costs the request path three more microseconds to build.
    """

    info: MethodInfo
    started_ns: int
    ended_ns: int
    peer: str
    metadata: Metadata
    request: bytes | message.Message | None
    request_class: type[message.Message] | None
    request_count: int
    response: bytes | message.Message | None
    response_count: int
    code: Any  # what the context said: a StatusCode, a number, or None
    details: str | bytes | None
    error: type[BaseException] | None
    ended_by_client: bool  # the status did not reach the client (it cancelled, or timed out)
    deadline_ns: int | None  # when the client's deadline passes (time.time_ns), if it has one
    trailing_metadata: Metadata | None
    principal: Principal | None
    # The active span's, when one was ("": the builder reads the `traceparent` header).
    trace_id: str
    span_id: str
    log_type: int | None = None  # None: the interceptor's own
    related: tuple[RelatedEvent, ...] = ()  # recorded by the handler (`record_event`)
    # A unary response reaches the client only with an OK status.
    unary_response: bool = False
    # How the call terminated, asked once it has: None while it runs, else whether the
    # client cancelled it (or its deadline passed) before the status reached it.
    # None itself: the record was settled when the handler returned.
    outcome: Callable[[], bool | None] | None = None


def span_ids() -> tuple[str, str]:
    """The active OpenTelemetry span's ids ("" when there is none): read on the request
    path, where the span is current."""
    span = trace.get_current_span()
    if span is trace.INVALID_SPAN:
        return "", ""  # the common case, without tracing
    span_context = span.get_span_context()
    if span_context.is_valid:
        return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"
    return "", ""


def traceparent_ids(metadata: Metadata) -> tuple[str, str]:
    """The ids of a W3C `traceparent` header ("" without a well-formed one): what the
    event says when no span was active (read by the builder, off the request path)."""
    for key, value in metadata:
        if key == "traceparent" and isinstance(value, str):
            # The caller's text: only lowercase hex ids, neither all zeros, are ids (a
            # sink that reads them as numbers, `OtelLogSink`, failed on others).
            match = _TRACEPARENT.fullmatch(value)
            if (
                match
                and match[1] != "ff"
                and not (match[1] == "00" and match[4])
                and match[2].strip("0")
                and match[3].strip("0")
            ):
                return match[2], match[3]
    return "", ""


# Version 00 is exactly this; a later one may add fields after the flags (W3C).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """How an interceptor builds events; the constructor arguments, validated."""

    node_id: str = ""
    principal: PrincipalResolver | None = None
    trusted_proxies: TrustedProxies = dataclasses.field(default_factory=TrustedProxies)
    hmac_key: bytes | None = None
    metadata_allowlist: frozenset[str] = frozenset()
    max_body_bytes: int = 100_000
    unauthenticated_max_body_bytes: int = 100_000
    max_message_bytes: int | None = None
    max_metadata_bytes: int | None = None
    summaries: SummaryPolicy | None = None
    policy: AuditPolicy = dataclasses.field(default_factory=AuditPolicy)
    fail_closed: bool = False
    log_type: int = event_pb2.LOG_TYPE_ACCOUNT_API


class EventIds:
    """UUID-shaped event ids: 80 random bits per process, then a 48-bit counter.

    As unique as uuid4 across processes, and about ten times cheaper to make.
    """

    def __init__(self) -> None:
        prefix = uuid.uuid4().hex  # version 4 and the RFC 4122 variant come with it
        self._prefix = f"{prefix[:8]}-{prefix[8:12]}-{prefix[12:16]}-{prefix[16:20]}-"
        self._counter = itertools.count(int.from_bytes(os.urandom(3)))

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


def make_config(
    *,
    node_id: str,
    principal: PrincipalResolver | None,
    trusted_proxies: Iterable[str],
    hmac_key: bytes | None,
    metadata_allowlist: Sequence[str],
    max_body_bytes: int,
    fail_closed: bool,
    unauthenticated_max_body_bytes: int | None = None,
    max_message_bytes: int | None = None,
    max_metadata_bytes: int | None = None,
    summaries: SummaryPolicy | None = None,
    policy: AuditPolicy | None = None,
    log_type: int = event_pb2.LOG_TYPE_ACCOUNT_API,
) -> AuditConfig:
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")
    if hmac_key is not None and len(hmac_key) < 16:
        # An empty key (an unset environment variable read as b"") let the HMAC of a
        # short value (a PIN) be found by trying them all (found by a review helper).
        raise ValueError("hmac_key must be at least 16 bytes (None: such fields masked)")
    return AuditConfig(
        node_id=node_id,
        principal=principal,
        trusted_proxies=TrustedProxies(trusted_proxies),
        hmac_key=hmac_key,
        metadata_allowlist=frozenset(k.lower() for k in metadata_allowlist),
        max_body_bytes=max_body_bytes,
        unauthenticated_max_body_bytes=min(
            max_body_bytes, unauthenticated_max_body_bytes or max_body_bytes
        ),
        max_message_bytes=max_message_bytes,
        max_metadata_bytes=max_metadata_bytes,
        summaries=summaries,
        policy=policy or AuditPolicy(),
        fail_closed=fail_closed,
        log_type=log_type,
    )
