"""What an event holds: bodies (redacted, capped), names and activities, the principal,
metadata, the peer behind proxies, and trace ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from auditline_testing.v1 import echo_pb2
from google.protobuf import json_format

from auditline.audit.v1 import options_pb2
from auditline.interceptor import (
    Principal,
    PrincipalInput,
    hmac_value,
)
from auditline.interceptor._record import traceparent_ids
from tests.interceptor.harness import FLAVOURS, KEY, Harness, R, requests


def test_request_and_response_bodies_are_recorded_and_redacted(harness: Harness) -> None:
    harness.stub.Echo(
        R(
            text="hello",
            credentials=echo_pb2.Credentials(user="bob", password="pw-secret", api_key="ak-secret"),
        )
    )
    event = harness.one_event()
    params = json_format.MessageToDict(event.request.request_params)
    assert params == {
        "text": "hello",
        "credentials": {"user": "bob", "api_key": hmac_value(KEY, "ak-secret")},
    }
    body = json_format.MessageToDict(event.response.response_body)
    assert body == {"text": "hello", "session_token": hmac_value(KEY, "token-hello")}


def test_streaming_events_hold_first_request_and_last_response(harness: Harness) -> None:
    list(harness.stub.ListThings(R(text="x", count=4)))
    event = harness.one_event()
    assert event.request.message_count == 1
    assert event.response.message_count == 4
    assert json_format.MessageToDict(event.response.response_body)["index"] == 3


def test_omit_response_body_option(harness: Harness) -> None:
    list(harness.stub.ChatThings(requests(R(text="a"))))
    event = harness.one_event()
    assert event.event_name == "ChatThings"
    assert not event.response.response_body.fields


def test_event_name_and_activity_come_from_options_then_verbs(harness: Harness) -> None:
    harness.stub.CreateThing(R(text="t"))
    harness.stub.Echo(R(text="t"))
    list(harness.stub.ListThings(R(text="t")))
    harness.stub.UploadThings(requests(R(text="t")))
    names = [(e.event_name, options_pb2.Activity.Name(e.activity)) for e in harness.events(4)]
    assert names == [
        ("MakeThing", "ACTIVITY_CREATE"),
        ("Echo", "ACTIVITY_OTHER"),
        ("ListThings", "ACTIVITY_READ"),
        ("UploadThings", "ACTIVITY_CREATE"),
    ]


def test_principal_from_the_handler(harness: Harness) -> None:
    harness.stub.Echo(R(action="principal"))
    request = harness.one_event().request
    assert (request.account_name, request.access_key) == ("alice", "AKALICE")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_principal_resolver_metadata_allowlist_and_never_recorded_headers(
    flavour: str, audit_mode: str
) -> None:
    seen: list[PrincipalInput] = []

    def resolve(call: PrincipalInput) -> Principal | None:
        seen.append(call)
        return Principal("from-resolver", "AKRESOLVED")

    h = Harness(
        flavour,
        mode=audit_mode,
        principal=resolve,
        metadata_allowlist=["x-tenant", "authorization", "cookie", "x-blob-bin"],
    )
    try:
        h.stub.Echo(
            R(text="m"),
            metadata=(
                ("x-tenant", "acme"),
                ("authorization", "Bearer header-secret"),
                ("cookie", "session=cookie-secret"),
                ("x-blob-bin", b"\x00bin-secret"),
                ("x-request-id", "req-42"),
                ("x-other", "not-allowed"),
            ),
        )
        event = h.one_event()
        assert event.request.account_name == "from-resolver"
        assert dict(event.request.metadata) == {"x-tenant": "acme"}
        assert event.request.request_id == "req-42"
        text = str(event)
        for secret in ("header-secret", "cookie-secret", "bin-secret", "not-allowed"):
            assert secret not in text
        assert seen[0].method == "/auditline_testing.v1.EchoService/Echo"
    finally:
        h.close()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_principal_resolver_that_raises_costs_the_call_neither_its_answer_nor_its_event(
    flavour: str, audit_mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its message (which may quote the credential it could not read) reaches neither
    the client nor the log; the call is answered and recorded, its caller unnamed."""
    secret = "resolver-secret-7788"

    def resolve(call: PrincipalInput) -> Principal | None:
        raise ValueError(f"could not decode credential {secret}")

    h = Harness(flavour, mode=audit_mode, principal=resolve, fail_closed=True)
    try:
        assert h.stub.Echo(R(text="m")).text == "m"
        event = h.one_event()
        assert event.response.response_status == "OK"
        assert not event.request.account_name
    finally:
        h.close()
    assert "the principal resolver failed" in caplog.text
    assert secret not in caplog.text


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_ipv6_peer(flavour: str, audit_mode: str) -> None:
    h = Harness(flavour, address="[::1]:0", mode=audit_mode)
    try:
        h.stub.Echo(R(text="v6"))
        request = h.one_event().request
        assert request.source_ip == "::1"
        assert request.source_port > 0
    finally:
        h.close()


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        ((), "127.0.0.1"),  # nobody is trusted: the header is ignored
        (("127.0.0.0/8",), "10.1.2.3"),  # the proxy is trusted, the next hop is not
        (("127.0.0.0/8", "10.0.0.0/8"), "203.0.113.7"),  # both proxies trusted
    ],
)
def test_x_forwarded_for_only_from_trusted_proxies(
    trusted: tuple[str, ...], expected: str, audit_mode: str
) -> None:
    h = Harness("sync", trusted_proxies=trusted, mode=audit_mode)
    try:
        h.stub.Echo(R(text="xff"), metadata=(("x-forwarded-for", "203.0.113.7, 10.1.2.3"),))
        assert h.one_event().request.source_ip == expected
    finally:
        h.close()


def test_trace_ids_from_traceparent(harness: Harness) -> None:
    trace_id, span_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    harness.stub.Echo(R(text="t"), metadata=(("traceparent", f"00-{trace_id}-{span_id}-01"),))
    event = harness.one_event()
    assert (event.trace_id, event.span_id) == (trace_id, span_id)


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-" + "z" * 32 + "-" + "y" * 16 + "-01",  # not hex: OtelLogSink failed on it
        "00-" + "0" * 32 + "-b7ad6b7169203331-01",  # all zeros: no trace
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # not lowercase
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",  # 00 has no more
    ],
)
def test_a_traceparent_that_is_not_one_gives_no_ids(traceparent: str) -> None:
    assert traceparent_ids((("traceparent", traceparent),)) == ("", "")


def test_a_later_traceparent_version_may_add_fields() -> None:
    trace_id, span_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    header = f"01-{trace_id}-{span_id}-01-what-comes-later"
    assert traceparent_ids((("traceparent", header),)) == (trace_id, span_id)


def test_bodies_over_the_cap_are_truncated_and_flagged(audit_mode: str) -> None:
    h = Harness("sync", max_body_bytes=300, mode=audit_mode)
    try:
        h.stub.Echo(R(text="x" * 2000, count=7))
        request = h.one_event().request
        assert request.params_truncated
        params = json_format.MessageToDict(request.request_params)
        # The long field goes; the short one after it is kept (it was lost with it).
        assert params == {"count": 7}
    finally:
        h.close()


def test_a_cut_keeps_the_small_fields_at_every_depth() -> None:
    """A long field of the caller's own no longer hides what the call did: a role or
    a scope beside a padded description (found by a review helper: detections of an
    admin made or a permission on all buckets were evaded so)."""
    from auditline.interceptor._bounds import cut_fields

    padded = {
        "service_account": {"display_name": "x", "description": "d" * 5000, "role": "ROLE_ADMIN"},
        "requests": [
            {"permission": {"description": "d" * 3000, "bucket_scope": "BUCKET_SCOPE_ALL"}},
            {"permission": {"description": "d" * 3000, "bucket_scope": "BUCKET_SCOPE_LISTED"}},
        ],
    }
    kept, cut = cut_fields(padded, 1000)
    assert cut
    assert kept == {
        "service_account": {"display_name": "x", "role": "ROLE_ADMIN"},
        "requests": [
            {"permission": {"bucket_scope": "BUCKET_SCOPE_ALL"}},
            {"permission": {"bucket_scope": "BUCKET_SCOPE_LISTED"}},
        ],
    }
    assert cut_fields({"a": 1}, 1000) == ({"a": 1}, False)
    kept, cut = cut_fields({"text": "x" * 100}, 10)
    assert (kept, cut) == ({}, True)
    # The one that matters last in a long list of padded items: kept (the items
    # were cut in order, whole, and it was lost behind them; a review helper).
    padded_list = {
        "requests": [{"description": "d" * 1000, "scope": "LISTED"}] * 99
        + [{"description": "evil", "scope": "ALL"}]
    }
    kept, _ = cut_fields(padded_list, 100_000)
    assert kept["requests"][-1] == {"description": "evil", "scope": "ALL"}
    # The cap holds, whatever the shape: many tiny items, long keys of a map.
    bodies: list[dict[str, Any]] = [
        {"items": [{"n": i} for i in range(200_000)]},
        {"items": [{} for _ in range(200_000)]},
        {"map": {"k" * 2000: 1, "b": 2}, "z": "z" * 2000},
    ]
    for body in bodies:
        kept, cut = cut_fields(body, 1000)
        assert cut
        assert len(json.dumps(kept, separators=(",", ":"))) <= 1000
    kept, _ = cut_fields({"map": {"k" * 2000: 1, "b": 2}}, 1000)
    assert kept == {"map": {"b": 2}}


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_unix_socket_peer(flavour: str, tmp_path: Path, audit_mode: str) -> None:
    socket_path = tmp_path / "echo.sock"
    h = Harness(flavour, address=f"unix:{socket_path}", mode=audit_mode)
    try:
        h.stub.Echo(R(text="unix"))
        assert h.one_event().request.source_ip.startswith("unix:")
    finally:
        h.close()


def test_trace_ids_from_the_active_opentelemetry_span() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from auditline.interceptor._record import span_ids

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("call") as span:
        context = span.get_span_context()
        assert span_ids() == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert span_ids() == ("", "")
    # A span propagated without an SDK (a non-recording one) names the trace as well.
    with trace.use_span(trace.NonRecordingSpan(context)):
        assert span_ids() == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    # An invalid span context names none.
    with trace.use_span(trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)):
        assert span_ids() == ("", "")
