"""The account audit log document's IAM and console structures (`apievent-json` files
of the IAM and settings logs): valid against schemas written from the document, and
as provable as the `ApiEvent` lines (any change to a record is seen)."""

from __future__ import annotations

import contextlib
import json
from functools import cache
from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from auditline.audit.v1 import event_pb2
from auditline.interceptor._formats import apievent_dict, render
from auditline.interceptor._leaf import LineError, event_leaf, read_line
from auditline.interceptor._log_shapes import _go_time, _kebab, _microseconds, _milliseconds
from tests.interceptor.test_formats import _scalar_paths, events
from tests.support.paths import TEST_DATA

SHAPES = TEST_DATA / "shapes"
IAM_CODES = ["s", "f", "fp", "fu", "limit_wc", "limit_mu", "slo", "flo", "tv"]


@cache
def schema(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SHAPES / name).read_text()))


def _errors(validator: jsonschema.Draft202012Validator, record: Any) -> list[str]:
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(record)]


@st.composite
def shaped_events(draw: st.DrawFn) -> event_pb2.ApiEvent:
    event = draw(events())
    event.log_type = draw(st.sampled_from([event_pb2.LOG_TYPE_IAM, event_pb2.LOG_TYPE_SETTINGS]))
    event.iam_code = draw(st.sampled_from(IAM_CODES))
    return event


@settings(max_examples=200, deadline=None)
@given(shaped_events())
def test_records_follow_the_documents_structures(event: event_pb2.ApiEvent) -> None:
    record = json.loads(render("apievent-json", event))
    if event.log_type == event_pb2.LOG_TYPE_IAM:
        assert not _errors(schema("iam_log.schema.json"), record)
        assert record["content"]["type"] == event.iam_code
        assert record["content"]["log_id"] == event.event_id
        assert record["content"]["ip"] == event.request.source_ip
    else:
        assert not _errors(schema("console_log.schema.json"), record)
        assert record["ConsoleEvent"]["StatusCode"] == event.response.response_code
        assert record["UserIdentity"]["UserName"] == event.request.account_name
    assert read_line("apievent-json", render("apievent-json", event)) == apievent_dict(event)


@settings(max_examples=200, deadline=None)
@given(shaped_events(), st.data())
def test_any_change_to_a_record_is_seen(event: event_pb2.ApiEvent, data: st.DataObject) -> None:
    record = json.loads(render("apievent-json", event))
    leaf = event_leaf(apievent_dict(event))
    path = data.draw(st.sampled_from(sorted(_scalar_paths(record), key=str)))
    target = record
    for key in path[:-1]:
        target = target[key]
    old = target[path[-1]]
    target[path[-1]] = (
        (not old) if isinstance(old, bool) else (old + 1 if isinstance(old, int) else f"{old}x")
    )
    changed = json.dumps(record).encode()
    with contextlib.suppress(LineError):  # or: not the record its event makes
        assert event_leaf(read_line("apievent-json", changed)) != leaf


def test_the_documents_time_and_name_forms() -> None:
    stamp = "2021-01-25T09:37:01.505980988Z"
    assert _milliseconds(stamp) == "2021-01-25T09:37:01.505Z"
    assert _milliseconds("2021-01-20T02:04:12Z") == "2021-01-20T02:04:12.000Z"
    assert _microseconds(stamp) == "2021-01-25T09:37:01.505980Z"
    assert _go_time(stamp) == "2021-01-25 09:37:01.505980988 +0000 UTC"
    assert _go_time("2021-01-25T09:37:01.5Z") == "2021-01-25 09:37:01.500000000 +0000 UTC"
    assert _kebab("EnableAccountAuditLogs") == "enable-account-audit-logs"
    assert _kebab("AuditEventsDropped") == "audit-events-dropped"
    assert _kebab("SetObjectImmutability") == "set-object-immutability"
