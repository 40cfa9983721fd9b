"""Events as OCSF records: API Activity (6003), and Detection Finding (2004) for the
findings log, in OCSF 1.8.0 or 1.1.0 (the version Amazon Security Lake's custom sources
take); and the inverse, the event a record was made from, for verification.

Each version's output is checked by the tests against that version's JSON Schema, as
shipped here in `ocsf/<version>/` (compiled from github.com/ocsf/ocsf-schema; data).
The record carries the rest of the event exactly in `unmapped.event`, so that the
event, and its leaf in the node's Merkle tree, can be made again from the record.
"""

from __future__ import annotations

import importlib.resources
import ipaddress
import json
from functools import cache
from typing import Any

from auditline.interceptor._log_names import ACTIVITY_ENUM_NAMES, LOG_DIR_NAMES

__all__ = [
    "OCSF_VERSION",
    "OCSF_VERSIONS",
    "WRITTEN_ATTRIBUTES",
    "class_schema",
    "document_from_ocsf",
    "ocsf_from_document",
]

OCSF_VERSION = "1.8.0"  # the default
OCSF_VERSIONS = ("1.8.0", "1.1.0")
PRODUCT = {"name": "auditline", "vendor_name": "auditline", "version": "0.1.0"}
_ACTIVITY_NAMES = {0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}
# The classes' schema files, by `class_uid`.
_CLASS_FILES = {6003: "api_activity", 2004: "detection_finding"}

# Every attribute the records below may carry, by path (lists' items by their
# attribute's name): the columns of the `ocsf-parquet` format, whose types come from
# the class's schema. A test fails when a record carries an attribute not listed.
WRITTEN_ATTRIBUTES: dict[int, tuple[str, ...]] = {
    6003: (
        *("activity_id", "activity_name", "category_uid", "category_name", "class_uid"),
        *("class_name", "type_uid", "type_name", "severity_id", "severity", "status_id"),
        *("status", "status_code", "status_detail", "time", "start_time", "end_time"),
        "duration",
        *("metadata.version", "metadata.product.name", "metadata.product.vendor_name"),
        *("metadata.product.version", "metadata.uid", "metadata.log_name"),
        *("metadata.sequence", "metadata.event_code", "metadata.profiles"),
        *("actor.user.name", "actor.user.uid", "actor.app_name", "actor.invoked_by"),
        *("api.operation", "api.service.name", "api.request.uid", "api.request.data"),
        *("api.response.code", "api.response.message", "api.response.error"),
        *("api.response.error_message", "api.response.data"),
        *("src_endpoint.ip", "src_endpoint.port", "src_endpoint.name"),
        *("http_request.user_agent", "trace.uid", "trace.span.uid"),
        *("trace.span.start_time", "trace.span.end_time", "unmapped"),
    ),
    2004: (
        *("activity_id", "activity_name", "category_uid", "category_name", "class_uid"),
        *("class_name", "type_uid", "type_name", "severity_id", "severity", "status_id"),
        *("status", "time", "finding_info.uid", "finding_info.title"),
        *("finding_info.analytic.uid", "finding_info.analytic.name"),
        *("finding_info.analytic.type_id", "finding_info.analytic.type"),
        *("finding_info.related_events.uid", "metadata.version", "metadata.product.name"),
        *("metadata.product.vendor_name", "metadata.product.version", "metadata.uid"),
        *("metadata.log_name", "metadata.sequence", "unmapped"),
    ),
}


@cache
def class_schema(class_uid: int, version: str) -> dict[str, Any]:
    """The JSON Schema of an OCSF class (6003 or 2004) in `version`. Detection Finding
    is shipped in 1.8.0 only; 1.1.0 asks for it and gets 1.8.0's (the attributes the
    findings carry have the same types in both: see the tests)."""
    folder = importlib.resources.files("auditline.interceptor") / "ocsf"
    name = f"{_CLASS_FILES[class_uid]}.schema.json"
    path = folder / version / name
    if not path.is_file():
        path = folder / OCSF_VERSION / name
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


_ACTIVITY_NUMBERS = {name: number for number, name in ACTIVITY_ENUM_NAMES.items()}


# A detection finding's severity from its rule's Sigma level (OCSF severity_id).
_SEVERITIES = {"informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
_SEVERITY_NAMES = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}


def _finding_record(doc: dict[str, Any], end_ns: int, version: str) -> dict[str, Any]:
    """A `DetectionFinding` event as OCSF Detection Finding (2004). The whole event
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
            "version": version,
            "product": PRODUCT,
            "uid": doc.get("EventId", ""),
            "log_name": "findings",
            "sequence": int(doc.get("Sequence", 0)),
        },
        "unmapped": {"event": doc},
    }


def ocsf_from_document(
    doc: dict[str, Any], start_ns: int, end_ns: int, version: str = OCSF_VERSION
) -> dict[str, Any]:
    """An event (protobuf's JSON mapping of `ApiEvent`) as an OCSF API Activity (6003)
    record of `version`, or, for a detection finding, Detection Finding (2004)."""
    if version not in OCSF_VERSIONS:
        raise ValueError(f"OCSF version must be one of {OCSF_VERSIONS}")
    if doc.get("LogType") == "LOG_TYPE_FINDINGS":
        return _finding_record(doc, end_ns, version)
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
        # 1.1.0's actor has no `app_name`: the client software is what invoked the call.
        caller = request["UserAgent"] or "unauthenticated caller"
        actor = {"app_name": caller} if version != "1.1.0" else {"invoked_by": caller}
    source_ip = request["SourceIP"]
    source: dict[str, Any]
    # An address, without an IPv6 zone (`fe80::1%eth0`: the zone, a local name,
    # makes no `ip_t`, and a long one overran its 40 characters; found by a review
    # helper); anything else (a unix socket) is a name.
    address = _address(source_ip.partition("%")[0])
    if address:
        source = {"ip": address}
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
        "version": version,
        "product": PRODUCT,
        "uid": doc["EventId"],
        "log_name": LOG_DIR_NAMES.get(log_type, "account_api"),
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
    # The trace profile is 1.8.0's; in 1.1.0 the ids stay in `unmapped.event` only.
    if doc["TraceId"] and version != "1.1.0":
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
    # Copied whole and the carried fields taken out (dict copies and pops run in C:
    # a third of the time of filtering key by key, for every exported event).
    rest = doc.copy()
    for key in _CARRIED:
        rest.pop(key, None)
    for half, carried in (("Request", _CARRIED_REQUEST), ("Response", _CARRIED_RESPONSE)):
        if half in doc:
            del rest[half]  # added back last, where the record has always had them
            part = rest[half] = doc[half].copy()
            for key in carried:
                # Carried elsewhere only when not empty (an empty body is left out there).
                if part.get(key):
                    del part[key]
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


def _address(text: str) -> str:
    """`text` if it is an IP address, else ""."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return ""
    return text
