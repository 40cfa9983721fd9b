"""Building the redacted event of a captured call: one JSON document, exactly protobuf's
JSON mapping of `ApiEvent` (a test checks that it round-trips unchanged).

The document is what the spool stores; a sink that takes messages gets the `ApiEvent`
parsed from it (`event_of`), so there is one builder and one content.
Everything a caller controls is bounded here: bodies at `max_body_bytes` (a few
KB for unauthenticated callers), the error message at 1 KB, header values at 1 KB.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format, message

from auditline.audit.v1 import event_pb2
from auditline.interceptor._bounds import (
    MAX_ERROR_BYTES,
    MAX_HEADER_CHARS,
    bounded_event,
    cut_fields,
)
from auditline.interceptor._formats import apievent_dict
from auditline.interceptor._log_names import ACTIVITY_ENUM_NAMES, LOG_TYPE_ENUM_NAMES
from auditline.interceptor._record import AuditConfig, CallRecord, traceparent_ids
from auditline.interceptor._redact import Redactor, timestamp_text
from auditline.interceptor._status import (
    as_status_code,
    cut_text,
    error_detail_lines,
    final_status,
)
from auditline.interceptor._types import EventDocument

__all__ = ["MAX_ERROR_BYTES", "MAX_HEADER_CHARS", "EventBuilder", "event_of"]

log = logging.getLogger("auditline.interceptor")

# Never recorded, whatever the allow-list says.
_NEVER_RECORDED = frozenset(
    {"authorization", "cookie", "set-cookie", "proxy-authorization", "x-api-key"}
)


def _time_text(ns: int) -> str:
    return timestamp_text(ns // 1_000_000_000, ns % 1_000_000_000)


# A call cancelled this close to its deadline timed out: gRPC's timer and the
# deadline the server computes from the client's timeout differ by that much.
_DEADLINE_SLACK_NS = 20_000_000


def _deadline_passed(record: CallRecord) -> bool:
    deadline = record.deadline_ns
    if deadline is None:
        return False
    if record.ended_by_client:
        return record.ended_ns + _DEADLINE_SLACK_NS >= deadline
    return record.ended_ns >= deadline


class EventBuilder:
    """Turns `CallRecord`s into events: parses, redacts, bounds and names things."""

    def __init__(self, config: AuditConfig) -> None:
        self.config = config
        self.redactor = Redactor(config.hmac_key)

    # --- the parts ---------------------------------------------------------------------

    def _body(
        self,
        raw: bytes | message.Message | None,
        cls: type[message.Message] | None,
        cap: int,
    ) -> tuple[dict[str, Any] | None, bool]:
        if raw is None:
            return None, False
        if isinstance(raw, bytes):
            limit = self.config.max_message_bytes
            if cls is None or (limit is not None and len(raw) > limit):
                # Unknown, or refused for its size: its size is all that is recorded.
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
        # JSON is at most ~20x the wire size; only measure when it could exceed the cap.
        if size * 20 <= cap:
            return body, False
        return cut_fields(body, cap)

    def body_cap(self, record: CallRecord) -> int:
        """How much of a body the call's event keeps (less without a caller)."""
        if record.principal is None:
            return self.config.unauthenticated_max_body_bytes
        return self.config.max_body_bytes

    def source(self, record: CallRecord) -> tuple[str, int]:
        """The caller's address and port (the client behind trusted proxies)."""
        return self.config.trusted_proxies.caller(record.peer, record.metadata)

    def _request_fields(self, record: CallRecord) -> tuple[str, str, dict[str, str]]:
        """(user agent, request id, allow-listed metadata), each value at most 1 KB."""
        user_agent = request_id = ""
        metadata: dict[str, str] = {}
        allow = self.config.metadata_allowlist
        for key, value in record.metadata:
            if not isinstance(value, str):
                continue
            value = value[:MAX_HEADER_CHARS]
            if key == "user-agent":
                user_agent = value
            elif key == "x-request-id":
                request_id = value
            elif key in allow and key not in _NEVER_RECORDED and not key.endswith("-bin"):
                metadata[key] = value
        return user_agent, request_id, metadata

    def status(self, record: CallRecord) -> tuple[grpc.StatusCode, str]:
        """The final code and message the client saw."""
        return final_status(
            as_status_code(record.code),
            record.details,
            record.error,
            ended_by_client=record.ended_by_client,
            deadline_passed=_deadline_passed(record),
        )

    @staticmethod
    def _messages_received(record: CallRecord, code: grpc.StatusCode) -> int:
        """Response messages the client got: a unary response only comes with OK."""
        if record.unary_response and code != grpc.StatusCode.OK:
            return 0
        return record.response_count

    def _response_body(
        self, record: CallRecord, code: grpc.StatusCode
    ) -> tuple[dict[str, Any] | None, bool]:
        if code != grpc.StatusCode.OK or record.info.omit_response_body:
            return None, False
        return self._body(record.response, None, self.body_cap(record))

    # --- the event --------------------------------------------------------------------

    def document(self, record: CallRecord, event_id: str) -> dict[str, Any]:
        """The redacted event as protobuf's JSON mapping of `ApiEvent` writes it.

        `Sequence` is filled in by whoever numbers events (the spool).
        """
        info = record.info
        user_agent, request_id, metadata = self._request_fields(record)
        source_ip, source_port = self.source(record)
        params, params_truncated = self._body(
            record.request, record.request_class, self.body_cap(record)
        )
        code, details = self.status(record)
        error, error_truncated = cut_text(details, MAX_ERROR_BYTES)
        body, body_truncated = self._response_body(record, code)
        principal = record.principal
        trace_id, span_id = record.trace_id, record.span_id
        if not trace_id:
            trace_id, span_id = traceparent_ids(record.metadata)
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
                "ResponseError": error,
                "ResponseBody": body or {},
                "ResponseErrorDetails": error_detail_lines(record.trailing_metadata),
                "MessageCount": self._messages_received(record, code),
                "ResponseBodyTruncated": body_truncated,
                "ResponseStatus": code.name,
                "ResponseErrorTruncated": error_truncated,
            },
            "EventId": event_id,
            "Sequence": "0",
            "NodeId": self.config.node_id,
            "Service": info.service,
            "Method": info.method,
            "Activity": ACTIVITY_ENUM_NAMES.get(info.activity, "ACTIVITY_UNSPECIFIED"),
            "LogType": LOG_TYPE_ENUM_NAMES.get(
                record.log_type or self.config.log_type, "LOG_TYPE_UNSPECIFIED"
            ),
            "TraceId": trace_id,
            "SpanId": span_id,
            "IamCode": "",
            "IamDescription": "",
        }

    def documents(
        self, record: CallRecord, *, event_id: str, next_id: Callable[[], str]
    ) -> list[EventDocument]:
        """A call's events as the sink stores them: those its handler recorded
        (`record_event`), then its own, named `event_id`."""
        cap = self.body_cap(record)
        documents = [self.related_document(r.event, next_id, cap) for r in record.related]
        try:
            document = self.document(record, event_id)
        except Exception as exc:
            # A bug must not cost the call its event: record it without its bodies.
            # Its type only: the message and the traceback's values may quote them.
            log.error(
                "could not build the audit event of %s (%s)",
                record.info.full_method,
                type(exc).__name__,
            )
            document = self.document(
                dataclasses.replace(record, request=None, response=None), event_id
            )
            document["Request"]["RequestParams"] = {"unbuildable": True}
        documents.append(
            EventDocument(document=document, at_ns=record.started_ns, end_ns=record.ended_ns)
        )
        return documents

    def related_document(
        self, event: event_pb2.ApiEvent, next_id: Callable[[], str], cap: int
    ) -> EventDocument:
        """An event a handler recorded with its call, with an id and this node's, cut
        as its call's own event is (`cap`: the call's `body_cap`): handlers copy what
        callers sent into such events (the access key of a failed login, say)."""
        if not event.event_id:
            event.event_id = next_id()
        if not event.node_id:
            event.node_id = self.config.node_id
        return EventDocument(
            document=bounded_event(apievent_dict(event), cap),
            at_ns=event.request.request_time.ToNanoseconds(),
            end_ns=event.response.response_time.ToNanoseconds(),
        )


def event_of(document: dict[str, Any]) -> event_pb2.ApiEvent:
    """The `ApiEvent` message of a document, for sinks that take messages."""
    return json_format.ParseDict(document, event_pb2.ApiEvent())
