"""Rendering events as JSON Lines: the account audit log document's shapes (`ApiEvent`,
and for the IAM and settings logs the document's IAM and console structures,
`_log_shapes`), or OCSF 1.8.0 API Activity.

Both render from the protobuf message by hand (protobuf's `MessageToDict` costs
about ten times as much); tests check the `ApiEvent` rendering against
protobuf's own JSON mapping and the OCSF rendering against the OCSF schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from google.protobuf import struct_pb2, timestamp_pb2

from auditline.audit.v1 import event_pb2, options_pb2
from auditline.interceptor._log_shapes import console_record, iam_record
from auditline.interceptor._redact import timestamp_text
from auditline.interceptor._types import EventDocument

__all__ = [
    "ACTIVITY_ENUM_NAMES",
    "FORMATS",
    "FORMAT_DIRS",
    "LOG_DIRS",
    "LOG_TYPE_ENUM_NAMES",
    "apievent_dict",
    "document_from_ocsf",
    "ocsf_dict",
    "ocsf_from_document",
    "render",
]

OCSF_VERSION = "1.8.0"
PRODUCT = {"name": "auditline", "vendor_name": "auditline", "version": "0.1.0"}
_ACTIVITY_NAMES = {0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}
_LOG_DIR_NAMES = {
    "LOG_TYPE_UNSPECIFIED": "account_api",
    "LOG_TYPE_ACCOUNT_API": "account_api",
    "LOG_TYPE_IAM": "iam",
    "LOG_TYPE_SETTINGS": "settings",
    "LOG_TYPE_SUMMARIES": "summaries",
    "LOG_TYPE_FINDINGS": "findings",
}
ACTIVITY_ENUM_NAMES = {v.number: v.name for v in options_pb2.Activity.DESCRIPTOR.values}
LOG_TYPE_ENUM_NAMES = {v.number: v.name for v in event_pb2.LogType.DESCRIPTOR.values}
# The folder of each format's files (`<prefix><folder>/<log>/YYYY/MM/DD/…`).
FORMAT_DIRS = {"apievent-json": "apievent", "ocsf-json": "ocsf"}
# The folder of each log type's files, by the `LogType` number.
LOG_DIRS = {number: _LOG_DIR_NAMES[name] for number, name in LOG_TYPE_ENUM_NAMES.items()}


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


_ACTIVITY_NUMBERS = {name: number for number, name in ACTIVITY_ENUM_NAMES.items()}


# A detection finding's severity from its rule's Sigma level (OCSF severity_id).
_SEVERITIES = {"informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
_SEVERITY_NAMES = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}


def _finding_record(doc: dict[str, Any], end_ns: int) -> dict[str, Any]:
    """A `DetectionFinding` event as OCSF 1.8.0 Detection Finding (2004). The whole event
    rides in `unmapped.event`: the verifier makes the record again from it."""
    params = doc.get("Request", {}).get("RequestParams", {})
    rule = params.get("rule", {})
    severity = _SEVERITIES.get(str(rule.get("level", "")), 0)
    return {
        "activity_id": 1,
        "activity_name": "Create",
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "severity_id": severity,
        "severity": _SEVERITY_NAMES.get(severity, "Unknown"),
        "status_id": 1,
        "status": "New",
        "time": end_ns // 1_000_000,
        "finding_info": {
            "uid": doc.get("EventId", ""),
            "title": str(rule.get("title", "")),
            "analytic": {
                "uid": str(rule.get("id", "")),
                "name": str(rule.get("title", "")),
                "type_id": 1,
                "type": "Rule",
            },
            "related_events": [{"uid": str(uid)} for uid in params.get("events", [])],
        },
        "metadata": {
            "version": OCSF_VERSION,
            "product": PRODUCT,
            "uid": doc.get("EventId", ""),
            "log_name": "findings",
            "sequence": int(doc.get("Sequence", 0)),
        },
        "unmapped": {"event": doc},
    }


def ocsf_from_document(doc: dict[str, Any], start_ns: int, end_ns: int) -> dict[str, Any]:
    """An event (protobuf's JSON mapping of `ApiEvent`) as OCSF 1.8.0 API Activity (6003),
    or, for a detection finding, Detection Finding (2004)."""
    if doc.get("LogType") == "LOG_TYPE_FINDINGS":
        return _finding_record(doc, end_ns)
    request, response = doc["Request"], doc["Response"]
    activity = _ACTIVITY_NUMBERS.get(doc["Activity"], 99)
    if activity not in _ACTIVITY_NAMES:
        activity = 99
    code = response["ResponseCode"]
    ok = code == 0
    start, end = start_ns // 1_000_000, end_ns // 1_000_000
    account_name, access_key = request["AccountName"], request["AccessKey"]
    actor: dict[str, Any]
    if account_name or access_key:
        user: dict[str, Any] = {}
        if account_name:
            user["name"] = account_name
        if access_key:
            user["uid"] = access_key
        actor = {"user": user}
    else:
        actor = {"app_name": request["UserAgent"] or "unauthenticated caller"}
    source_ip = request["SourceIP"]
    source: dict[str, Any]
    if source_ip and not source_ip.startswith("unix:"):
        source = {"ip": source_ip}
        if request["SourcePort"]:
            source["port"] = request["SourcePort"]
    else:
        source = {"name": source_ip or "unknown"}
    status = response["ResponseStatus"]
    error = response["ResponseError"]
    api_response: dict[str, Any] = {"code": code}
    if ok:
        api_response["message"] = "OK"
    else:
        api_response["error"] = status
        if error:
            api_response["error_message"] = error
    if response.get("ResponseBody"):
        api_response["data"] = response["ResponseBody"]
    api_request: dict[str, Any] = {"uid": request["RequestId"] or doc["EventId"]}
    if request.get("RequestParams"):
        api_request["data"] = request["RequestParams"]
    log_type = doc["LogType"]
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": PRODUCT,
        "uid": doc["EventId"],
        "log_name": _LOG_DIR_NAMES.get(log_type, "account_api"),
        "sequence": int(doc["Sequence"]),
    }
    if doc["IamCode"]:
        metadata["event_code"] = doc["IamCode"]
    record: dict[str, Any] = {
        "activity_id": activity,
        "activity_name": _ACTIVITY_NAMES[activity],
        "category_uid": 6,
        "category_name": "Application Activity",
        "class_uid": 6003,
        "class_name": "API Activity",
        "type_uid": 600300 + activity,
        "type_name": f"API Activity: {_ACTIVITY_NAMES[activity]}",
        "severity_id": 1 if ok else 2,
        "severity": "Informational" if ok else "Low",
        "status_id": 1 if ok else 2,
        "status": "Success" if ok else "Failure",
        "status_code": status or ("OK" if ok else "UNKNOWN"),
        "time": start,
        "start_time": start,
        "end_time": end,
        "duration": max(end - start, 0),
        "metadata": metadata,
        "actor": actor,
        "api": {
            "operation": doc["EventName"],
            "service": {"name": doc["Service"]},
            "request": api_request,
            "response": api_response,
        },
        "src_endpoint": source,
        "unmapped": {
            "node_id": doc["NodeId"],
            "method": doc["Method"],
            "log_type": log_type,
            "request_messages": request["MessageCount"],
            "response_messages": response["MessageCount"],
        },
    }
    if not ok and error:
        record["status_detail"] = error
    if response["ResponseErrorDetails"]:
        record["unmapped"]["error_details"] = response["ResponseErrorDetails"]
    # The rest of the event, exactly, so that the event (and its leaf in the node's
    # Merkle tree) can be recomputed from this record (`auditline verify`).
    record["unmapped"]["event"] = _event_rest(doc)
    if request["UserAgent"]:
        record["http_request"] = {"user_agent": request["UserAgent"]}
    if doc["TraceId"]:
        record["trace"] = {"uid": doc["TraceId"]}
        if doc["SpanId"]:
            record["trace"]["span"] = {"uid": doc["SpanId"], "start_time": start, "end_time": end}
        metadata["profiles"] = ["trace"]
    return record


# Fields of an event that its OCSF record carries elsewhere, exactly (see
# `document_from_ocsf`); every other field goes to `unmapped.event` as it is.
_CARRIED = frozenset({"EventName", "EventId", "Sequence", "NodeId", "Service", "Method", "LogType"})
_CARRIED_REQUEST = frozenset({"RequestParams", "MessageCount"})
_CARRIED_RESPONSE = frozenset({"ResponseBody", "ResponseErrorDetails", "MessageCount"})


def _event_rest(doc: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in doc.items() if k not in _CARRIED and k not in ("Request", "Response")}
    for half, carried in (("Request", _CARRIED_REQUEST), ("Response", _CARRIED_RESPONSE)):
        if half in doc:
            # Carried elsewhere only when not empty (an empty body is left out there).
            rest[half] = {k: v for k, v in doc[half].items() if k not in carried or not v}
    return rest


def document_from_ocsf(record: dict[str, Any]) -> dict[str, Any]:
    """The event an OCSF record of `ocsf_from_document` was made from, exactly (the
    inverse, for verification: the record made again from it must be the same)."""
    if record.get("class_uid") == 2004:
        return dict(record["unmapped"]["event"])
    unmapped, api = record["unmapped"], record["api"]
    rest = unmapped["event"]
    doc: dict[str, Any] = {k: v for k, v in rest.items() if k not in ("Request", "Response")}
    doc |= {
        "EventName": api["operation"],
        "EventId": record["metadata"]["uid"],
        "Sequence": str(record["metadata"]["sequence"]),
        "NodeId": unmapped["node_id"],
        "Service": api["service"]["name"],
        "Method": unmapped["method"],
        "LogType": unmapped["log_type"],
    }
    if "Request" in rest:
        request = doc["Request"] = dict(rest["Request"])
        if "data" in api["request"]:
            request["RequestParams"] = api["request"]["data"]
        if unmapped["request_messages"]:
            request["MessageCount"] = unmapped["request_messages"]
    if "Response" in rest:
        response = doc["Response"] = dict(rest["Response"])
        if "data" in api["response"]:
            response["ResponseBody"] = api["response"]["data"]
        if "error_details" in unmapped:
            response["ResponseErrorDetails"] = unmapped["error_details"]
        if unmapped["response_messages"]:
            response["MessageCount"] = unmapped["response_messages"]
    return doc


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


def ocsf_dict(event: event_pb2.ApiEvent) -> dict[str, Any]:
    """The event as an OCSF 1.8.0 API Activity (class 6003) record."""
    return ocsf_from_document(apievent_dict(event), *_times(event))


def _apievent_line(body: bytes, start_ns: int, end_ns: int, log_type: int) -> bytes:
    if log_type == event_pb2.LOG_TYPE_IAM:
        return orjson.dumps(iam_record(orjson.loads(body)), option=orjson.OPT_APPEND_NEWLINE)
    if log_type == event_pb2.LOG_TYPE_SETTINGS:
        return orjson.dumps(console_record(orjson.loads(body)), option=orjson.OPT_APPEND_NEWLINE)
    # The spool holds the event's JSON already: the line only wraps it.
    return b'{"ApiEvent":' + body + b"}\n"


def _ocsf_line(body: bytes, start_ns: int, end_ns: int, log_type: int) -> bytes:
    return orjson.dumps(
        ocsf_from_document(orjson.loads(body), start_ns, end_ns), option=orjson.OPT_APPEND_NEWLINE
    )


# Each renders one spooled event: its JSON body, its start and end times, its log type.
FORMATS: dict[str, Callable[[bytes, int, int, int], bytes]] = {
    "apievent-json": _apievent_line,
    "ocsf-json": _ocsf_line,
}


def render(format_name: str, event: event_pb2.ApiEvent) -> bytes:
    """One JSON Lines record of `event` in the named format."""
    return FORMATS[format_name](orjson.dumps(apievent_dict(event)), *_times(event), event.log_type)
