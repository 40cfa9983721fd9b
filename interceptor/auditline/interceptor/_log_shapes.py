"""The account audit log document's own structures for its IAM and console logs.

In the `apievent-json` format each log is written as the document shows it: the
account API log as `{"ApiEvent": …}`, the IAM log as its IAM structure
(`created_date`, `content{type, ip, user_name, …}`), and the settings log (the
console operations of this service) as the console structure (`UserIdentity`,
`ConsoleEvent{Eventname, StatusCode, …}`). Every field the event knows is filled;
the rest is left empty as the document's example leaves it — `location_info` too,
since no location is ever guessed.

A record must still prove its event (the verifier recomputes each event's leaf from
the files), so each carries the whole event where the document leaves room for it:
the IAM record in `content.details.ApiEvent`, the console record in
`ConsoleEvent.EventResponse` (a JSON string, as in the document's example). Reading a
record back takes that event and makes the record again from it: it must be the same,
so no field of the record can change unseen.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

__all__ = [
    "LOCATION_FIELDS",
    "console_record",
    "document_from_console",
    "document_from_iam",
    "iam_record",
]

LOCATION_FIELDS = (
    "country_code",
    "country_code3",
    "country_name",
    "city_name",
    "latitude",
    "longitude",
    "time_zone",
    "continent_code",
)
_WORD = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _milliseconds(stamp: str) -> str:
    """Protobuf's JSON timestamp (`…:SS[.fraction]Z`) as the IAM log writes dates:
    ISO 8601 with milliseconds (`2021-01-20T02:04:12.000Z`); "" for no time."""
    if not stamp:
        return ""
    fraction = stamp[20:-1] if len(stamp) > 20 else ""
    return f"{stamp[:19]}.{fraction.ljust(3, '0')[:3]}Z"


def _microseconds(stamp: str) -> str:
    """As the console log writes `LoginTime`: `2021-01-25T09:19:11.622206Z`."""
    if not stamp:
        return ""
    fraction = stamp[20:-1] if len(stamp) > 20 else ""
    return f"{stamp[:19]}.{fraction.ljust(6, '0')[:6]}Z"


def _go_time(stamp: str) -> str:
    """As the console log writes `EventTime` (Go's time format, in UTC):
    `2021-01-25 09:37:01.505980988 +0000 UTC`."""
    if not stamp:
        return ""
    fraction = stamp[20:-1] if len(stamp) > 20 else ""
    return f"{stamp[:10]} {stamp[11:19]}.{fraction.ljust(9, '0')} +0000 UTC"


def _kebab(name: str) -> str:
    """`EnableAccountAuditLogs` → `enable-account-audit-logs`, as the console log names
    its events (`add-new-notification-recipient`)."""
    return _WORD.sub("-", name).lower()


def iam_record(document: dict[str, Any]) -> dict[str, Any]:
    """The IAM log's structure of an event of the IAM log."""
    request = document.get("Request", {})
    response = document.get("Response", {})
    return {
        "created_date": _milliseconds(response.get("ResponseTime", "")),
        "organization": "",
        "org_type": "TENANT",
        "source": "api",
        "created_by": "IAM",
        "content": {
            "date": _milliseconds(request.get("RequestTime", "")),
            "type": document.get("IamCode", ""),
            "description": document.get("IamDescription", ""),
            "connection": "",
            "connection_id": "",
            "client_id": request.get("AccessKey", ""),
            "client_name": request.get("AccountName", ""),
            "ip": request.get("SourceIP", ""),
            "hostname": document.get("NodeId", ""),
            "user_id": request.get("AccessKey", ""),
            "user_name": request.get("AccountName", ""),
            "audience": document.get("Service", ""),
            "scope": "",
            "strategy": "",
            "strategy_type": "",
            "log_id": document.get("EventId", ""),
            "isMobile": False,
            "details": {"ApiEvent": document},
            "user_agent": request.get("UserAgent", ""),
            "location_info": dict.fromkeys(LOCATION_FIELDS, ""),
        },
        "bucket_name": "",
    }


def console_record(document: dict[str, Any]) -> dict[str, Any]:
    """The console log's structure of an event of the settings log."""
    request = document.get("Request", {})
    response = document.get("Response", {})
    address = request.get("SourceIP", "")
    port = request.get("SourcePort", 0)
    event_name = document.get("EventName", "")
    return {
        "ConsoleVersion": document.get("Version", ""),
        "DeploymentID": document.get("NodeId", ""),
        "LoginTime": _microseconds(request.get("RequestTime", "")),
        "UserIdentity": {
            "EventSource": f"/{document.get('Service', '')}/{document.get('Method', '')}",
            "UserName": request.get("AccountName", ""),
            "Role": "",
            "IPAddress": f"{address}:{port}" if port else address,
        },
        "ConsoleEvent": {
            "Eventname": _kebab(event_name),
            "Status": response.get("ResponseError", "") or response.get("ResponseStatus", ""),
            "StatusCode": response.get("ResponseCode", 0),
            "EventResponse": orjson.dumps({"Action": event_name, "ApiEvent": document}).decode(),
            "EventTime": _go_time(response.get("ResponseTime", "")),
        },
    }


def document_from_iam(record: dict[str, Any]) -> dict[str, Any]:
    """The event an IAM record carries; `ValueError` when the record is not the one its
    event makes."""
    document = record["content"]["details"]["ApiEvent"]
    if not isinstance(document, dict) or iam_record(document) != record:
        raise ValueError("the IAM record is not the one its event makes")
    return document


def document_from_console(record: dict[str, Any]) -> dict[str, Any]:
    """The event a console record carries; `ValueError` when the record is not the one
    its event makes."""
    document = orjson.loads(record["ConsoleEvent"]["EventResponse"])["ApiEvent"]
    if not isinstance(document, dict) or console_record(document) != record:
        raise ValueError("the console record is not the one its event makes")
    return dict(document)
