"""Exported record formats against their specs: protobuf's JSON mapping, and OCSF 1.8.0
and 1.1.0."""

from __future__ import annotations

import contextlib
import hashlib
import json
from functools import cache
from typing import Any

import jsonschema
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from auditline.audit.v1 import event_pb2
from auditline.interceptor._formats import apievent_dict, ocsf_dict, render
from auditline.interceptor._leaf import LineError, canonical, event_leaf, read_line
from auditline.interceptor._ocsf import OCSF_VERSIONS, class_schema


@cache
def _validator(class_uid: int = 6003, version: str = "1.8.0") -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(class_schema(class_uid, version))


TEXT = st.text(max_size=20)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def events(draw: st.DrawFn) -> event_pb2.ApiEvent:
    event = event_pb2.ApiEvent(
        event_name=draw(st.sampled_from(["CreateBucket", "GetBucket", "LoginSuccess", "X"])),
        version="2",
        event_id=draw(st.uuids()).hex,
        sequence=draw(st.integers(1, 2**62)),
        node_id=draw(TEXT),
        service=draw(TEXT),
        method=draw(TEXT),
        activity=draw(st.sampled_from([0, 1, 2, 3, 4, 99])),  # type: ignore[arg-type]
        log_type=draw(st.sampled_from([0, 1, 2, 3, 4])),  # type: ignore[arg-type]
        trace_id=draw(st.sampled_from(["", "0af7651916cd43dd8448eb211c80319c"])),
        span_id=draw(st.sampled_from(["", "b7ad6b7169203331"])),
        iam_code=draw(st.sampled_from(["", "fp", "s"])),
        iam_description=draw(st.sampled_from(["", "Failed login (incorrect password)."])),
    )
    request, response = event.request, event.response
    request.account_name = draw(TEXT)
    request.access_key = draw(TEXT)
    # A zone (scoped IPv6, a long interface name) made no valid `ip_t` (a review helper).
    request.source_ip = draw(
        st.sampled_from(
            ["127.0.0.1", "::1", "unix:/tmp/s", "", "10.1.2.3", f"fe80::1%{'s' * 40}", "::1%lo"]
        )
    )
    request.source_port = draw(st.integers(0, 65535))
    request.user_agent = draw(TEXT)
    request.request_id = draw(TEXT)
    request.metadata.update(draw(st.dictionaries(TEXT, TEXT, max_size=2)))
    request.message_count = draw(st.integers(0, 1000))
    request.params_truncated = draw(st.booleans())
    started = draw(st.integers(0, 4_000_000_000_000_000_000))
    request.request_time.FromNanoseconds(started)
    request.request_params.update(
        draw(st.dictionaries(st.text(max_size=5), JSON_VALUE, max_size=3))
    )
    response.response_time.FromNanoseconds(started + draw(st.integers(0, 10**10)))
    code = draw(st.integers(0, 16))
    response.response_code = code
    response.response_status = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ][code]
    response.response_error = "" if code == 0 else draw(TEXT)
    response.response_body.update(
        draw(st.dictionaries(st.text(max_size=5), JSON_VALUE, max_size=3))
    )
    response.error_details.extend(draw(st.lists(TEXT, max_size=2)))
    response.message_count = draw(st.integers(0, 1000))
    response.body_truncated = draw(st.booleans())
    return event


@settings(max_examples=200, deadline=None)
@given(events())
def test_apievent_rendering_is_protobufs_json_mapping(event: event_pb2.ApiEvent) -> None:
    expected = json_format.MessageToDict(event, always_print_fields_with_no_presence=True)
    assert apievent_dict(event) == expected
    line = render("apievent-json", event)
    if event.log_type in (event_pb2.LOG_TYPE_IAM, event_pb2.LOG_TYPE_SETTINGS):
        assert "ApiEvent" not in json.loads(line)  # the document's IAM or console structure
    else:
        # The one deviation in files: `Sequence` as a number, which protobuf still parses.
        written = json.loads(line)["ApiEvent"]
        assert written == expected | {"Sequence": event.sequence}
        assert json_format.ParseDict(written, event_pb2.ApiEvent()) == event
    assert read_line("apievent-json", line) == expected
    assert json_format.ParseDict(expected, event_pb2.ApiEvent()) == event


@pytest.mark.parametrize("version", OCSF_VERSIONS)
@settings(max_examples=200, deadline=None)
@given(event=events())
def test_ocsf_rendering_is_valid_api_activity(version: str, event: event_pb2.ApiEvent) -> None:
    record: dict[str, Any] = json.loads(render("ocsf-json", event, version))
    errors = sorted(_validator(6003, version).iter_errors(record), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    assert record["metadata"]["version"] == version
    assert record == ocsf_dict(event, version)
    assert record["class_uid"] == 6003
    assert record["type_uid"] == 600300 + record["activity_id"]
    assert record["api"]["operation"] == event.event_name
    assert record["metadata"]["sequence"] == event.sequence
    assert (record["status_id"] == 1) == (event.response.response_code == 0)


@settings(max_examples=300, deadline=None)
@given(events())
def test_the_leaf_is_the_same_from_every_format(event: event_pb2.ApiEvent) -> None:
    document = apievent_dict(event)
    leaf = event_leaf(document)
    # (An `ocsf-parquet` row reads back as the `ocsf-json` line: test_ocsf_parquet.py.)
    for format_name in ("apievent-json", "ocsf-json"):
        for version in OCSF_VERSIONS:
            line = render(format_name, event, version)
            assert event_leaf(read_line(format_name, line)) == leaf, (format_name, version)


@settings(max_examples=100, deadline=None)
@given(events(), st.data())
def test_any_change_to_an_ocsf_record_is_seen(
    event: event_pb2.ApiEvent, data: st.DataObject
) -> None:
    record = json.loads(render("ocsf-json", event))
    leaf = event_leaf(apievent_dict(event))
    path = data.draw(st.sampled_from(sorted(_scalar_paths(record))))
    target = record
    for key in path[:-1]:
        target = target[key]
    old = target[path[-1]]
    target[path[-1]] = (
        (not old) if isinstance(old, bool) else (old + 1 if isinstance(old, int) else f"{old}x")
    )
    changed = json.dumps(record).encode()
    with contextlib.suppress(LineError):  # or: not the record its event makes
        assert event_leaf(read_line("ocsf-json", changed)) != leaf


def _scalar_paths(value: Any, prefix: tuple[Any, ...] = ()) -> set[tuple[Any, ...]]:
    if isinstance(value, dict):
        return {p for k, v in value.items() for p in _scalar_paths(v, (*prefix, k))}
    if isinstance(value, list):
        return {p for i, v in enumerate(value) for p in _scalar_paths(v, (*prefix, i))}
    return {prefix} if value is not None else set()


def test_the_canonical_form_is_plain_sorted_json() -> None:
    """A third party can recompute the leaf with any JSON library: sorted keys, no
    spaces, UTF-8, integers in decimal."""
    event = event_pb2.ApiEvent(event_name="Zé", version="2", sequence=7)
    event.request.request_params.update({"b": [1, 'ü\\n"x'], "a": {"z": True, "y": None}})
    document = apievent_dict(event)
    expected = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical(document) == expected.encode()
    assert event_leaf(document) == hashlib.sha256(b"\x00" + expected.encode()).digest()


def test_timestamps_are_read_as_protobuf_reads_them() -> None:
    """The leaf reader's own timestamp parser agrees with protobuf's on every form
    protobuf writes (0, 3, 6 or 9 fraction digits) and defers to it on the rest."""
    import random

    from google.protobuf import timestamp_pb2

    from auditline.interceptor._leaf import timestamp_nanoseconds

    rng = random.Random(12)
    texts = ["1970-01-01T00:00:00Z", "2026-12-04T21:53:09+01:00", "2026-12-04T21:53:09.5Z"]
    for _ in range(3000):
        nanos = rng.choice([0, rng.randrange(10**9), rng.randrange(1000) * 10**6])
        stamp = timestamp_pb2.Timestamp(seconds=rng.randrange(4 * 10**9), nanos=nanos)
        texts.append(stamp.ToJsonString())
    for text in texts:
        expected = timestamp_pb2.Timestamp()
        expected.FromJsonString(text)
        assert timestamp_nanoseconds(text) == expected.ToNanoseconds(), text
