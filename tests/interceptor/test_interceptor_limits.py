"""The interceptor's own guarantees, flavour by flavour: fail-closed answers, events
recorded with the call, and the bounds on what an (unauthenticated) caller can make
the audit log hold."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import pytest
from auditline_testing.v1 import echo_pb2, echo_pb2_grpc
from grpc_status import rpc_status

from auditline.audit.v1 import event_pb2
from auditline.interceptor import (
    AuditUnavailableError,
    EventDocument,
    SummaryPolicy,
    record_event,
)
from tests.interceptor.harness import FLAVOURS, Harness
from tests.support.outcome import code_of, error_of

R = echo_pb2.EchoRequest


class DocumentSink:
    """Keeps documents; refuses to make them durable (`wait`) while `refusing`."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []
        self.refusing = False
        self._changed = threading.Condition()

    def emit(self, event: event_pb2.ApiEvent) -> None:
        raise AssertionError("a document sink gets documents")

    def emit_documents(self, documents: Sequence[EventDocument], *, wait: bool) -> None:
        if wait and self.refusing:
            raise AuditUnavailableError("the test sink refuses")
        with self._changed:
            self.documents += [d.document for d in documents]
            self._changed.notify_all()

    def wait_for(self, count: int) -> list[dict[str, Any]]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.documents) >= count, 10)
            return list(self.documents)


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _requests(*items: echo_pb2.EchoRequest) -> Iterator[echo_pb2.EchoRequest]:
    return iter(items)


FAILING_CALLS: dict[str, Callable[[echo_pb2_grpc.EchoServiceStub], Any]] = {
    "unary abort": lambda s: s.Echo(R(action="abort")),
    "unary abort_with_status": lambda s: s.Echo(R(action="abort_with_status")),
    "unary raise": lambda s: s.Echo(R(action="raise")),
    "unary ok": lambda s: s.Echo(R(text="fine")),
    "server stream ok": lambda s: list(s.ListThings(R(text="l"))),
    "client stream abort": lambda s: s.UploadThings(_requests(R(action="abort"))),
    "bidi raise": lambda s: list(s.ChatThings(_requests(R(action="raise")))),
}


@pytest.mark.parametrize("case", FAILING_CALLS)
def test_fail_closed_answers_unavailable_when_the_event_cannot_be_kept(
    flavour: str, case: str
) -> None:
    sink = DocumentSink()
    harness = Harness(flavour, sink=sink, fail_closed=True)
    try:
        sink.refusing = True
        error = error_of(lambda: FAILING_CALLS[case](harness.stub))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert rpc_status.from_call(error) is None  # type: ignore[arg-type]  # no rich details of the replaced answer
        (document,) = sink.wait_for(1)
    finally:
        harness.close()
    response = document["Response"]
    assert response["ResponseStatus"] == "UNAVAILABLE"
    assert "the handler had answered" in response["ResponseError"]


def test_fail_closed_streams_stop_before_their_status(flavour: str) -> None:
    """A server stream whose messages went out, then whose event cannot be kept: the
    client gets the messages and UNAVAILABLE, never OK."""
    sink = DocumentSink()
    harness = Harness(flavour, sink=sink, fail_closed=True)
    try:
        sink.refusing = True
        received: list[Any] = []
        error = error_of(lambda: received.extend(harness.stub.ListThings(R(text="s"))))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert len(received) == 3
    finally:
        harness.close()


def test_record_event_outside_a_call_is_refused() -> None:
    assert not record_event(event_pb2.ApiEvent(event_name="Outside"))


def test_events_a_handler_records_travel_with_its_call(
    flavour: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tests.support.echo as echo

    def login_event() -> event_pb2.ApiEvent:
        event = event_pb2.ApiEvent(event_name="LoginSuccess", version="2")
        event.request.request_time.GetCurrentTime()
        event.response.response_time.GetCurrentTime()
        return event

    original, original_async = echo.act, echo.act_async
    shared = login_event()  # one object recorded in every call

    def act(request: Any, context: Any) -> Any:
        assert record_event(shared)
        return original(request, context)

    async def act_async(request: Any, context: Any) -> Any:
        assert record_event(shared)
        return await original_async(request, context)

    monkeypatch.setattr(echo, "act", act)
    monkeypatch.setattr(echo, "act_async", act_async)
    sink = DocumentSink()
    harness = Harness(flavour, sink=sink, fail_closed=True)
    try:
        harness.stub.Echo(R(text="x"))
        documents = sink.wait_for(2)
        sink.refusing = True
        assert code_of(lambda: harness.stub.Echo(R(text="y"))) == grpc.StatusCode.UNAVAILABLE
        documents = sink.wait_for(4)
    finally:
        harness.close()
    # The handler's event first, then the call's, in one hand-over; when they cannot be
    # kept, neither is, and the client's UNAVAILABLE is what the log says.
    assert [d["EventName"] for d in documents] == ["LoginSuccess", "Echo"] * 2
    assert documents[0]["EventId"]
    assert documents[0]["EventId"] != documents[1]["EventId"]
    # A copy is recorded: each call's gets an id of its own, the handler's is untouched.
    assert documents[2]["EventId"] not in (documents[0]["EventId"], documents[1]["EventId"])
    assert not shared.event_id
    assert not shared.node_id
    statuses = [d["Response"]["ResponseStatus"] for d in documents[1::2]]
    assert statuses == ["OK", "UNAVAILABLE"]


def test_long_error_messages_are_cut_for_the_client_and_the_log(
    flavour: str, audit_mode: str
) -> None:
    harness = Harness(flavour, mode=audit_mode)
    try:
        text = "é" * 3000  # 6000 bytes of UTF-8, 18000 percent-encoded: too much for clients
        error = error_of(lambda: harness.stub.Echo(R(text=text, action="abort_text")))
        # The client gets the handler's code, and 2 KB of its message as it travels
        # (each "é" percent-encoded is 6 bytes; measured raw, 1024 of them went out,
        # 6 KB, and a client with rich details beside them refused the trailers).
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error.details() == "é" * (2048 // 6)
        event = harness.one_event()
    finally:
        harness.close()
    assert event.response.response_status == "NOT_FOUND"
    assert event.response.response_error == error.details()  # what the client saw


def test_unauthenticated_bodies_are_cut_and_calls_past_the_rate_summarized(
    flavour: str, audit_mode: str
) -> None:
    harness = Harness(
        flavour,
        mode=audit_mode,
        max_body_bytes=100_000,
        unauthenticated_max_body_bytes=1024,
        summaries=SummaryPolicy(rate=0.001, burst=3, interval=3600),
    )
    try:
        for _ in range(10):
            harness.stub.Echo(R(text="y" * 5000))
        code_of(lambda: harness.stub.Echo(R(action="abort")))
        harness.stub.Echo(R(text="z" * 5000, action="principal"))  # authenticated: whole
        assert harness.interceptor.flush(10)
        harness.interceptor.close()  # writes the open summaries
        events = list(harness.sink.events)
    finally:
        harness.close()
    individual = [e for e in events if e.event_name == "Echo"]
    (summary,) = [e for e in events if e.event_name == "CallsSummarized"]
    assert len(individual) == 3 + 1
    assert all(e.request.params_truncated for e in individual[:3])
    assert individual[-1].request.account_name == "alice"
    assert not individual[-1].request.params_truncated
    params = summary.request.request_params
    assert params["calls"] == 8
    assert params["codes"] == {"OK": 7, "NOT_FOUND": 1}
    assert params["methods"] == {"/auditline_testing.v1.EchoService/Echo": 8}
    assert summary.request.source_ip == "127.0.0.1"


STREAM_CALLS: dict[str, Callable[[echo_pb2_grpc.EchoServiceStub, Any, Any], Any]] = {
    "unary": lambda s, r, md: s.Echo(r, metadata=md),
    "server stream": lambda s, r, md: list(s.ListThings(r, metadata=md)),
    "client stream": lambda s, r, md: s.UploadThings(_requests(R(text="a"), r), metadata=md),
    "bidi": lambda s, r, md: list(s.ChatThings(_requests(R(text="a"), r), metadata=md)),
}


@pytest.mark.parametrize("shape", STREAM_CALLS)
def test_oversized_requests_are_refused_and_audited(
    flavour: str, shape: str, audit_mode: str
) -> None:
    harness = Harness(flavour, max_message_bytes=2048, max_metadata_bytes=2048, mode=audit_mode)
    call = STREAM_CALLS[shape]
    try:
        big = error_of(lambda: call(harness.stub, R(text="m" * 4096), ()))
        heavy = error_of(lambda: call(harness.stub, R(text="ok"), (("x-pad", "p" * 4096),)))
        call(harness.stub, R(text="ok"), ())  # still serving
        events = harness.events(3)
    finally:
        harness.close()
    assert big.code() == heavy.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "request message" in (big.details() or "")
    assert "metadata" in (heavy.details() or "")
    assert [e.response.response_status for e in events] == [
        "RESOURCE_EXHAUSTED",
        "RESOURCE_EXHAUSTED",
        "OK",
    ]
