"""The part of the audit interceptor shared by the sync and asyncio flavours.

On the request path the interceptors only *capture*: a `CallRecord` holding the
raw request and response bytes (which gRPC had to produce anyway), the status,
the peer and the metadata. A background worker turns records into redacted
`ApiEvent` messages and hands them to the sink, in completion order.
"""

from __future__ import annotations

import collections
import contextvars
import dataclasses
import itertools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import grpc
from google.protobuf import message
from opentelemetry import trace

from auditline.audit.v1 import event_pb2
from auditline.interceptor._formats import ACTIVITY_ENUM_NAMES, LOG_TYPE_ENUM_NAMES
from auditline.interceptor._methods import MethodInfo
from auditline.interceptor._peer import TrustedProxies, parse_peer
from auditline.interceptor._redact import Redactor, timestamp_text

__all__ = [
    "AuditCore",
    "AuditUnavailableError",
    "CallRecord",
    "Principal",
    "PrincipalInput",
    "PrincipalResolver",
    "Sink",
    "set_log_type",
    "set_principal",
]


log = logging.getLogger("auditline.interceptor")

Metadata = tuple[tuple[str, str | bytes], ...]

# Never recorded, whatever the allow-list says.
_NEVER_RECORDED = frozenset(
    {"authorization", "cookie", "set-cookie", "proxy-authorization", "x-api-key"}
)
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class Sink(Protocol):
    """Where finished events go. `emit` is called from one thread, in order.

    A sink may also have `admit() -> None`, called before each call runs; raising
    `AuditUnavailableError` there refuses the call with UNAVAILABLE (the spool does
    this when it is full). A sink that stores JSON may have
    `emit_document(document: dict, at_ns: int, end_ns: int)` instead of needing
    `emit`: it then gets each event as its protobuf-JSON-mapping dict, built
    without the cost of the protobuf message.
    """

    def emit(self, event: event_pb2.ApiEvent) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who made a call, as the audit log names them."""

    account_name: str
    access_key: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class PrincipalInput:
    """What a principal resolver sees of a call, at its end."""

    method: str
    metadata: Metadata
    peer: str
    auth_context: Mapping[str, Iterable[bytes]]


PrincipalResolver = Callable[[PrincipalInput], Principal | None]


class BuildError(RuntimeError):
    """Building an event failed: a bug, reported and skipped, never a sink failure."""


class AuditUnavailableError(RuntimeError):
    """A fail-closed interceptor could not hand an event to its sink."""


@dataclasses.dataclass(slots=True)
class _CallScope:
    principal: Principal | None = None
    log_type: int | None = None


_SCOPE: contextvars.ContextVar[_CallScope | None] = contextvars.ContextVar(
    "auditline_call_scope", default=None
)


def set_log_type(log_type: int) -> None:
    """File the current call's audit event under another log (`LogType`), for example
    `LOG_TYPE_SETTINGS` for calls that change the audit settings themselves."""
    scope = _SCOPE.get()
    if scope is not None:
        scope.log_type = log_type


def set_principal(account_name: str, access_key: str = "") -> None:
    """Name the caller of the current call in its audit event.

    Call it from the handler or an inner interceptor once the caller is known
    (for example after checking a token); outside an audited call it does nothing.
    """
    scope = _SCOPE.get()
    if scope is not None:
        scope.principal = Principal(account_name, access_key)


def enter_scope() -> tuple[_CallScope, contextvars.Token[_CallScope | None]]:
    scope = _CallScope()
    return scope, _SCOPE.set(scope)


def exit_scope(token: contextvars.Token[_CallScope | None]) -> None:
    _SCOPE.reset(token)


class CallRecord(NamedTuple):
    """Everything captured about one finished call, before redaction.

    Raw on purpose: the final status is settled, and bodies parsed and redacted,
    by the background worker, off the request path.
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
    ended_by_client: bool
    deadline_passed: bool
    trailing_metadata: Metadata | None
    principal: Principal | None
    trace_id: str
    span_id: str
    log_type: int | None = None  # None: the interceptor's own


def _trace_ids(metadata: Metadata) -> tuple[str, str]:
    """The active OpenTelemetry span's ids, else those of a `traceparent` header."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"
    for key, value in metadata:
        if key == "traceparent" and isinstance(value, str):
            parts = value.split("-")
            if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
                return parts[1], parts[2]
    return "", ""


def _as_text(details: str | bytes | None) -> str:
    if details is None:
        return ""
    if isinstance(details, bytes):
        return details.decode("utf-8", "replace")
    return details


def summarize_status_details(raw: bytes) -> list[str]:
    """One line per rich error detail of a `grpc-status-details-bin` value."""
    from google.rpc import error_details_pb2, status_pb2

    try:
        status = status_pb2.Status.FromString(raw)
    except message.DecodeError:
        return ["(unparseable grpc-status-details-bin)"]
    lines = []
    for detail in status.details:
        type_name = detail.type_url.rpartition("/")[2]
        short = type_name.rpartition(".")[2]
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = "; ".join(f"{v.field}: {v.description}" for v in bad.field_violations)
            lines.append(f"{short}: {violations}")
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            lines.append(f"{short}: {info.reason} ({info.domain})")
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            text = "; ".join(f"{v.type} {v.subject}: {v.description}" for v in failure.violations)
            lines.append(f"{short}: {text}")
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            resource = error_details_pb2.ResourceInfo()
            detail.Unpack(resource)
            lines.append(f"{short}: {resource.resource_type} {resource.resource_name}")
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            lines.append(f"{short}: retry after {retry.retry_delay.ToJsonString()}")
        else:
            lines.append(short)  # the type only: unknown details may hold anything
    return lines


_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _time_text(ns: int) -> str:
    return timestamp_text(ns // 1_000_000_000, ns % 1_000_000_000)


def as_status_code(code: Any) -> grpc.StatusCode | None:
    """gRPC's sync context gives `StatusCode`s, the asyncio one may give numbers."""
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    return _CODES_BY_NUMBER.get(int(code), grpc.StatusCode.UNKNOWN)


def final_status(
    code: grpc.StatusCode | None,
    details: str | bytes | None,
    error: type[BaseException] | None,
    *,
    ended_by_client: bool,
    deadline_passed: bool,
) -> tuple[grpc.StatusCode, str]:
    """The status the client saw, from what the handler did and how the call ended."""
    if ended_by_client and code in (None, grpc.StatusCode.OK):
        if deadline_passed:
            return grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"
        return grpc.StatusCode.CANCELLED, "Cancelled by the client"
    if error is not None and code in (None, grpc.StatusCode.OK):
        # An uncaught exception: the type only, never its message (it may hold
        # secrets) nor the stack.
        return grpc.StatusCode.UNKNOWN, f"Exception calling application: {error.__name__}"
    return code or grpc.StatusCode.OK, _as_text(details)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """How an interceptor builds events; the constructor arguments, validated."""

    node_id: str = ""
    principal: PrincipalResolver | None = None
    trusted_proxies: TrustedProxies = dataclasses.field(default_factory=TrustedProxies)
    hmac_key: bytes | None = None
    metadata_allowlist: frozenset[str] = frozenset()
    max_body_bytes: int = 100_000
    fail_closed: bool = False
    log_type: int = event_pb2.LOG_TYPE_ACCOUNT_API


class _EventIds:
    """UUID-shaped event ids: 80 random bits per process, then a 48-bit counter.

    As unique as uuid4 across processes, and about ten times cheaper to make.
    """

    def __init__(self) -> None:
        prefix = uuid.uuid4().hex  # version 4 and the RFC 4122 variant come with it
        self._prefix = f"{prefix[:8]}-{prefix[8:12]}-{prefix[12:16]}-{prefix[16:20]}-"
        self._counter = itertools.count(int.from_bytes(os.urandom(3)))

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class AuditCore:
    """Builds events from records and feeds the sink from one background thread.

    The request path only appends to a deque (no lock, no wake-up); the worker
    drains it in batches every `poll_interval` seconds, so a busy server pays
    one thread switch per batch rather than one per call.
    """

    poll_interval = 0.05

    def __init__(self, sink: Sink, config: AuditConfig) -> None:
        self.sink = sink
        self.config = config
        self.redactor = Redactor(config.hmac_key)
        self.admit: Callable[[], None] = getattr(sink, "admit", None) or (lambda: None)
        self._emit_document: Callable[[dict[str, Any], int, int], None] | None = getattr(
            sink, "emit_document", None
        )
        self.sink_errors = 0
        # What the background worker did: events delivered, CPU time spent on them.
        self.delivered = 0
        self.worker_cpu_seconds = 0.0
        self._ids = _EventIds()
        self._pending: collections.deque[CallRecord | _Flush] = collections.deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    # --- request path -------------------------------------------------------

    def capture(
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
    ) -> CallRecord:
        """Snapshot a finished call. Cheap: references and a few reads, nothing more."""
        metadata: Metadata = context.invocation_metadata() or ()
        peer: str = context.peer()
        principal = scope.principal if scope is not None else None
        if principal is None and self.config.principal is not None:
            principal = self.config.principal(
                PrincipalInput(info.full_method, tuple(metadata), peer, context.auth_context())
            )
        trace_id, span_id = _trace_ids(metadata)
        remaining = context.time_remaining() if ended_by_client else None
        return CallRecord(
            info,
            started_ns,
            time.time_ns(),
            peer,
            metadata,
            request,
            request_class,
            request_count,
            response,
            response_count,
            context.code(),
            context.details(),
            type(error) if error is not None else None,
            ended_by_client,
            remaining is not None and remaining <= 0,
            context.trailing_metadata(),
            principal,
            trace_id,
            span_id,
            scope.log_type if scope is not None else None,
        )

    def submit(self, record: CallRecord) -> None:
        """Queue a record; in fail-closed mode emit it now and raise if that fails."""
        if self.config.fail_closed:
            try:
                self._hand_over(record)
            except Exception as exc:
                self.sink_errors += 1
                raise AuditUnavailableError(
                    f"the audit log cannot record this call ({type(exc).__name__})"
                ) from None
            return
        if self._thread is None:
            self._start_worker()
        self._pending.append(record)

    # --- background ---------------------------------------------------------

    def _start_worker(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                thread = threading.Thread(target=self._run, name="auditline-events", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        pending = self._pending
        while True:
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            started = time.thread_time()
            while pending:
                item = pending.popleft()
                if isinstance(item, _Flush):
                    item.done.set()
                else:
                    self._deliver(item)
                    self.delivered += 1
                    if self.delivered % 16 == 0:
                        # Hand the GIL to request threads now and then, so a large
                        # batch does not stall calls in flight (their p99 latency).
                        time.sleep(0)
            self.worker_cpu_seconds += time.thread_time() - started
            if self._closed:
                return

    def _hand_over(self, record: CallRecord) -> None:
        """Build the record's event in the form the sink takes, and give it to the sink."""
        if self._emit_document is not None:
            self._emit_document(self.build_document(record), record.started_ns, record.ended_ns)
        else:
            self.sink.emit(self.build_event(record))

    def _deliver(self, record: CallRecord) -> None:
        try:
            self._hand_over(record)
        except BuildError:
            # A bug here must not take the worker down with it.
            log.exception("could not build the audit event of %s", record.info.full_method)
            return
        except Exception as exc:
            self.sink_errors += 1
            if self.sink_errors == 1 or self.sink_errors % 1000 == 0:
                log.error("audit sink failed (%d so far): %s", self.sink_errors, type(exc).__name__)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every call finished so far has reached the sink."""
        if self._thread is None:
            return True
        marker = _Flush()
        self._pending.append(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver what is pending, then stop the worker."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._wake.set()
            thread.join(timeout)

    # --- event building -----------------------------------------------------

    def _body(
        self, raw: bytes | message.Message | None, cls: type[message.Message] | None
    ) -> tuple[dict[str, Any] | None, bool]:
        if raw is None:
            return None, False
        if isinstance(raw, bytes):
            if cls is None:
                return {"bytes": len(raw)}, False
            try:
                msg = cls.FromString(raw)
            except message.DecodeError:
                # What a malformed request held is unknown; its bytes may be anything.
                return {"unparseable_bytes": len(raw)}, False
            size = len(raw)
        else:
            msg, size = raw, raw.ByteSize()
        body = self.redactor.to_dict(msg)
        cap = self.config.max_body_bytes
        # JSON is at most ~20x the wire size; only measure when it could exceed the cap.
        if size * 20 <= cap:
            return body, False
        if len(json.dumps(body, separators=(",", ":"))) <= cap:
            return body, False
        kept: dict[str, Any] = {}
        used = 2
        for key, value in body.items():
            size_of = len(json.dumps({key: value}, separators=(",", ":")))
            if used + size_of > cap:
                break
            kept[key] = value
            used += size_of
        return kept, True

    def _source(self, record: CallRecord) -> tuple[str, int]:
        address, port = parse_peer(record.peer)
        proxies = self.config.trusted_proxies
        if proxies:
            forwarded = [
                v for k, v in record.metadata if k == "x-forwarded-for" and isinstance(v, str)
            ]
            client = proxies.client_address(address, forwarded)
            if client != address:
                return client, 0
        return address, port

    def _request_fields(self, record: CallRecord) -> tuple[str, str, str, int, dict[str, str]]:
        """(user agent, request id, source ip, source port, allow-listed metadata)."""
        user_agent = request_id = ""
        metadata: dict[str, str] = {}
        allow = self.config.metadata_allowlist
        for key, value in record.metadata:
            if not isinstance(value, str):
                continue
            if key == "user-agent":
                user_agent = value
            elif key == "x-request-id":
                request_id = value
            elif key in allow and key not in _NEVER_RECORDED and not key.endswith("-bin"):
                metadata[key] = value
        source_ip, source_port = self._source(record)
        return user_agent, request_id, source_ip, source_port, metadata

    def build_document(self, record: CallRecord) -> dict[str, Any]:
        """The redacted event as protobuf's JSON mapping of `ApiEvent` writes it.

        The same content as `build_event`, without building the message: this is
        what the spool stores. `Sequence` is filled in by whoever numbers events.
        """
        try:
            return self._document(record)
        except Exception as exc:
            raise BuildError(str(exc)) from exc

    def _document(self, record: CallRecord) -> dict[str, Any]:
        info = record.info
        user_agent, request_id, source_ip, source_port, metadata = self._request_fields(record)
        params, params_truncated = self._body(record.request, record.request_class)
        code, details = _final_status(record)
        body: dict[str, Any] | None = None
        body_truncated = False
        if code == grpc.StatusCode.OK and not info.omit_response_body:
            body, body_truncated = self._body(record.response, None)
        details_lines = _error_details(record)
        principal = record.principal
        return {
            "EventName": info.event_name,
            "Version": "2",
            "Request": {
                "AccountName": principal.account_name if principal else "",
                "AccessKey": principal.access_key if principal else "",
                "RequestTime": _time_text(record.started_ns),
                "RequestParams": params or {},
                "SourceIP": source_ip,
                "UserAgent": user_agent,
                "RequestId": request_id,
                "Metadata": metadata,
                "MessageCount": record.request_count,
                "RequestParamsTruncated": params_truncated,
                "SourcePort": source_port,
            },
            "Response": {
                "ResponseTime": _time_text(record.ended_ns),
                "ResponseCode": code.value[0],
                "ResponseError": details,
                "ResponseBody": body or {},
                "ResponseErrorDetails": details_lines,
                "MessageCount": record.response_count,
                "ResponseBodyTruncated": body_truncated,
                "ResponseStatus": code.name,
            },
            "EventId": self._ids.next(),
            "Sequence": "0",
            "NodeId": self.config.node_id,
            "Service": info.service,
            "Method": info.method,
            "Activity": ACTIVITY_ENUM_NAMES.get(info.activity, "ACTIVITY_UNSPECIFIED"),
            "LogType": LOG_TYPE_ENUM_NAMES.get(
                record.log_type or self.config.log_type, "LOG_TYPE_UNSPECIFIED"
            ),
            "TraceId": record.trace_id,
            "SpanId": record.span_id,
            "IamCode": "",
        }

    def build_event(self, record: CallRecord) -> event_pb2.ApiEvent:
        """The redacted `ApiEvent` of a record."""
        try:
            return self._event(record)
        except Exception as exc:
            raise BuildError(str(exc)) from exc

    def _event(self, record: CallRecord) -> event_pb2.ApiEvent:
        info = record.info
        event = event_pb2.ApiEvent(
            event_name=info.event_name,
            version="2",
            event_id=self._ids.next(),
            node_id=self.config.node_id,
            service=info.service,
            method=info.method,
            activity=info.activity,  # type: ignore[arg-type]
            log_type=record.log_type or self.config.log_type,  # type: ignore[arg-type]
            trace_id=record.trace_id,
            span_id=record.span_id,
        )
        request = event.request
        if record.principal is not None:
            request.account_name = record.principal.account_name
            request.access_key = record.principal.access_key
        request.request_time.FromNanoseconds(record.started_ns)
        (
            request.user_agent,
            request.request_id,
            request.source_ip,
            request.source_port,
            metadata,
        ) = self._request_fields(record)
        request.metadata.update(metadata)
        request.message_count = record.request_count
        params, request.params_truncated = self._body(record.request, record.request_class)
        request.request_params.SetInParent()
        if params:
            request.request_params.update(params)

        response = event.response
        response.response_time.FromNanoseconds(record.ended_ns)
        code, details = _final_status(record)
        response.response_code = code.value[0]
        response.response_status = code.name
        response.response_error = details
        response.message_count = record.response_count
        response.response_body.SetInParent()
        if code == grpc.StatusCode.OK and not info.omit_response_body:
            body, response.body_truncated = self._body(record.response, None)
            if body:
                response.response_body.update(body)
        response.error_details.extend(_error_details(record))
        return event


def _final_status(record: CallRecord) -> tuple[grpc.StatusCode, str]:
    return final_status(
        as_status_code(record.code),
        record.details,
        record.error,
        ended_by_client=record.ended_by_client,
        deadline_passed=record.deadline_passed,
    )


def _error_details(record: CallRecord) -> list[str]:
    """The `grpc-status-details-bin` trailer, summarized line by line."""
    return [
        line
        for key, value in record.trailing_metadata or ()
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes)
        for line in summarize_status_details(value)
    ]


def make_config(
    *,
    node_id: str,
    principal: PrincipalResolver | None,
    trusted_proxies: Iterable[str],
    hmac_key: bytes | None,
    metadata_allowlist: Sequence[str],
    max_body_bytes: int,
    fail_closed: bool,
    log_type: int = event_pb2.LOG_TYPE_ACCOUNT_API,
) -> AuditConfig:
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")
    return AuditConfig(
        node_id=node_id,
        principal=principal,
        trusted_proxies=TrustedProxies(trusted_proxies),
        hmac_key=hmac_key,
        metadata_allowlist=frozenset(k.lower() for k in metadata_allowlist),
        max_body_bytes=max_body_bytes,
        fail_closed=fail_closed,
        log_type=log_type,
    )
