"""A sink that sends each audit event as an OpenTelemetry log record.

For embedders whose logs already travel through an OpenTelemetry pipeline (an OTLP
collector, a vendor's agent): the record's body is the event's JSON (exactly what the
spool keeps and an `apievent-json` file holds under `ApiEvent`), its time the call's
end, its trace context the call's (so the record sits under the call's span), and its
attributes the fields a pipeline routes and filters on. Only OpenTelemetry's API is
used: the embedding service sets up the SDK and its exporter (OTLP, say).

This sink is not durable: a record is handed to the SDK's processor, which may drop
it under pressure or lose it in a crash. For a log that must be complete, use the
`Spool` (and its exporters), and this sink beside it only for live visibility.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, SeverityNumber, get_logger_provider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from auditline.audit.v1 import event_pb2
from auditline.interceptor._formats import event_document
from auditline.interceptor._types import EventDocument

__all__ = ["OtelLogSink"]

EVENT_NAME = "auditline.audit.event"  # the log record's event name


def _context(document: dict[str, Any]) -> Any:
    """The call's trace context, where the event names one."""
    trace_id, span_id = document.get("TraceId", ""), document.get("SpanId", "")
    if not trace_id or not span_id:
        return None
    span = SpanContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(span))


class OtelLogSink:
    """A `Sink` emitting one OpenTelemetry log record per event."""

    def __init__(self, logger_provider: LoggerProvider | None = None) -> None:
        provider = logger_provider or get_logger_provider()
        self._logger = provider.get_logger("auditline.interceptor")

    def emit(self, event: event_pb2.ApiEvent) -> None:
        self.emit_documents([event_document(event)])

    def emit_documents(self, documents: Sequence[EventDocument], *, wait: bool = False) -> None:
        """Emit each event (`wait` changes nothing: the SDK's processor decides)."""
        for item in documents:
            document = item.document
            request = document.get("Request", {})
            response = document.get("Response", {})
            code = int(response.get("ResponseCode", 0))
            self._logger.emit(
                timestamp=item.end_ns,
                observed_timestamp=time.time_ns(),
                context=_context(document),
                severity_number=SeverityNumber.INFO if code == 0 else SeverityNumber.WARN,
                severity_text="INFO" if code == 0 else "WARN",
                body=orjson.dumps(document).decode(),
                event_name=EVENT_NAME,
                attributes={
                    "auditline.event_name": document.get("EventName", ""),
                    "auditline.event_id": document.get("EventId", ""),
                    "auditline.log_type": document.get("LogType", ""),
                    "rpc.system": "grpc",
                    "rpc.service": document.get("Service", ""),
                    "rpc.method": document.get("Method", ""),
                    "rpc.grpc.status_code": code,
                    "enduser.id": request.get("AccountName", ""),
                    "client.address": request.get("SourceIP", ""),
                },
            )
