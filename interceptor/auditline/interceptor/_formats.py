"""Rendering events as JSON Lines: the account audit log document's shapes (`ApiEvent`,
and for the IAM and settings logs the document's IAM and console structures,
`_log_shapes`), or OCSF (`_ocsf`; the `ocsf-parquet` format's files are made of the
same records, `_ocsf_parquet`).

The `ApiEvent` shape is rendered from the protobuf message by hand (protobuf's
`MessageToDict` costs about ten times as much); tests check it against protobuf's own
JSON mapping, and the OCSF records against each version's OCSF schema.

One deviation from protobuf's JSON mapping, in the files only: `Sequence` (int64) is
written as a JSON number, not as text, so that SQL engines read it as one (the
document's shape leaves it to us: it has no such field). protobuf's JSON parsers take
either; the event as the spool, the API and the leaf know it keeps the text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from google.protobuf import struct_pb2, timestamp_pb2

from auditline.audit.v1 import event_pb2
from auditline.interceptor._log_names import ACTIVITY_ENUM_NAMES, LOG_TYPE_ENUM_NAMES
from auditline.interceptor._log_shapes import console_record, iam_record
from auditline.interceptor._ocsf import OCSF_VERSION, ocsf_from_document
from auditline.interceptor._redact import timestamp_text
from auditline.interceptor._types import EventDocument

__all__ = [
    "FORMATS",
    "FORMAT_DIRS",
    "apievent_dict",
    "ocsf_dict",
    "render",
]

# The folder of each JSON format's files (`<prefix><folder>/<log>/YYYY/MM/DD/…`); the
# `ocsf-parquet` format's keys are Security Lake's (`_export`).
FORMAT_DIRS = {"apievent-json": "apievent", "ocsf-json": "ocsf"}


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        # protobuf's JSON writes whole numbers without a fraction; so does this.
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _struct(value.struct_value)
    if kind == "list_value":
        return [_value(v) for v in value.list_value.values]
    return None


def _struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    # Indexing by key is about twice as fast as the map's items() view.
    fields = struct.fields
    return {key: _value(fields[key]) for key in fields}


def _time(stamp: timestamp_pb2.Timestamp) -> str:
    return timestamp_text(stamp.seconds, stamp.nanos)


def apievent_dict(event: event_pb2.ApiEvent) -> dict[str, Any]:
    """The event as protobuf's JSON mapping writes it (every field, `json_name`s)."""
    request, response = event.request, event.response
    out: dict[str, Any] = {"EventName": event.event_name, "Version": event.version}
    if event.HasField("request"):
        fields: dict[str, Any] = {
            "AccountName": request.account_name,
            "AccessKey": request.access_key,
        }
        if request.HasField("request_time"):
            fields["RequestTime"] = _time(request.request_time)
        if request.HasField("request_params"):
            fields["RequestParams"] = _struct(request.request_params)
        fields |= {
            "SourceIP": request.source_ip,
            "UserAgent": request.user_agent,
            "RequestId": request.request_id,
            "Metadata": dict(request.metadata),
            "MessageCount": request.message_count,
            "RequestParamsTruncated": request.params_truncated,
            "SourcePort": request.source_port,
        }
        out["Request"] = fields
    if event.HasField("response"):
        fields = {}
        if response.HasField("response_time"):
            fields["ResponseTime"] = _time(response.response_time)
        fields |= {"ResponseCode": response.response_code, "ResponseError": response.response_error}
        if response.HasField("response_body"):
            fields["ResponseBody"] = _struct(response.response_body)
        fields |= {
            "ResponseErrorDetails": list(response.error_details),
            "MessageCount": response.message_count,
            "ResponseBodyTruncated": response.body_truncated,
            "ResponseStatus": response.response_status,
            "ResponseErrorTruncated": response.error_truncated,
        }
        out["Response"] = fields
    out |= {
        "EventId": event.event_id,
        "Sequence": str(event.sequence),  # protobuf's JSON writes 64-bit integers as text
        "NodeId": event.node_id,
        "Service": event.service,
        "Method": event.method,
        "Activity": ACTIVITY_ENUM_NAMES.get(event.activity, event.activity),
        "LogType": LOG_TYPE_ENUM_NAMES.get(event.log_type, event.log_type),
        "TraceId": event.trace_id,
        "SpanId": event.span_id,
        "IamCode": event.iam_code,
        "IamDescription": event.iam_description,
    }
    return out


def _times(event: event_pb2.ApiEvent) -> tuple[int, int]:
    return (
        event.request.request_time.ToNanoseconds(),
        event.response.response_time.ToNanoseconds(),
    )


def event_document(event: event_pb2.ApiEvent) -> EventDocument:
    """An `ApiEvent` message as a sink takes it: for an event recorded outside any call
    (`record_event` returned False), handed to the sink by the service itself."""
    start_ns, end_ns = _times(event)
    return EventDocument(document=apievent_dict(event), at_ns=start_ns, end_ns=end_ns)


def ocsf_dict(event: event_pb2.ApiEvent, version: str = OCSF_VERSION) -> dict[str, Any]:
    """The event as an OCSF record (API Activity, class 6003) of `version`."""
    return ocsf_from_document(apievent_dict(event), *_times(event), version)


_SEQUENCE_KEY = b'"Sequence":"'


def _apievent_line(body: bytes, start_ns: int, end_ns: int, log_type: int, version: str) -> bytes:
    if log_type in (event_pb2.LOG_TYPE_IAM, event_pb2.LOG_TYPE_SETTINGS):
        document = orjson.loads(body)
        document["Sequence"] = int(document["Sequence"])
        shape = iam_record if log_type == event_pb2.LOG_TYPE_IAM else console_record
        return orjson.dumps(shape(document), option=orjson.OPT_APPEND_NEWLINE)
    # The spool holds the event's JSON already: the line only wraps it, with `Sequence`
    # as a number (protobuf's JSON writes 64-bit integers as text; its parsers take
    # both). Found from the right: only escaped strings follow the key.
    start = body.rfind(_SEQUENCE_KEY) + len(_SEQUENCE_KEY)
    end = body.index(b'"', start)
    return b'{"ApiEvent":%s%s%s}\n' % (body[: start - 1], body[start:end], body[end + 1 :])


def _ocsf_line(body: bytes, start_ns: int, end_ns: int, log_type: int, version: str) -> bytes:
    return orjson.dumps(
        ocsf_from_document(orjson.loads(body), start_ns, end_ns, version),
        option=orjson.OPT_APPEND_NEWLINE,
    )


def _ocsf_column_line(
    body: bytes, start_ns: int, end_ns: int, log_type: int, version: str
) -> bytes:
    from auditline.interceptor._ocsf_parquet import column_line

    return column_line(ocsf_from_document(orjson.loads(body), start_ns, end_ns, version), version)


# Each renders one spooled event: its JSON body, its start and end times, its log
# type, and the OCSF version the exporter writes (the ApiEvent shapes have none).
# An `ocsf-parquet` file is made of its events' lines as its columns take them, the
# free-form attributes as JSON text (`_ocsf_parquet`).
FORMATS: dict[str, Callable[[bytes, int, int, int, str], bytes]] = {
    "apievent-json": _apievent_line,
    "ocsf-json": _ocsf_line,
    "ocsf-parquet": _ocsf_column_line,
}


def render(format_name: str, event: event_pb2.ApiEvent, version: str = OCSF_VERSION) -> bytes:
    """One JSON Lines record of `event` in the named format."""
    body = orjson.dumps(apievent_dict(event))
    return FORMATS[format_name](body, *_times(event), event.log_type, version)
