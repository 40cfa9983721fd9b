"""The audit interceptor through real gRPC channels: every call shape and outcome, in
every flavour, gives one event with the status the client saw; failures of the sink
or of other interceptors never break a call unaudited."""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, NamedTuple
from urllib.parse import quote

import grpc
import pytest
from auditline_testing.v1 import echo_pb2, echo_pb2_grpc
from google.protobuf import json_format

from auditline.interceptor import (
    AsyncAuditInterceptor,
    MemorySink,
)
from auditline.interceptor._status import MAX_SENT_DETAILS_BYTES, sendable, sendable_trailers
from tests.interceptor.harness import FLAVOURS, Event, Harness, R, raw_call, requests
from tests.interceptor.test_aio_handlers import _Handlers
from tests.support.echo import SECRET_IN_EXCEPTION, started
from tests.support.outcome import code_of

CASES: dict[str, tuple[Callable[[echo_pb2_grpc.EchoServiceStub], Any], str, str, int, int]] = {
    # name: (call, expected status name, expected error, request count, response count)
    "unary ok": (lambda s: s.Echo(R(text="hi")), "OK", "", 1, 1),
    "unary abort": (lambda s: s.Echo(R(action="abort")), "NOT_FOUND", "no such thing", 1, 0),
    "unary abort_with_status": (
        lambda s: s.Echo(R(action="abort_with_status")),
        "INVALID_ARGUMENT",
        "bad text",
        1,
        0,
    ),
    "unary set_code": (  # the handler's response does not reach the client
        lambda s: s.Echo(R(action="set_code")),
        "ALREADY_EXISTS",
        "already there",
        1,
        0,
    ),
    "unary raise": (
        lambda s: s.Echo(R(action="raise")),
        "UNKNOWN",
        "Exception calling application: ValueError",
        1,
        0,
    ),
    "unary set_code then raise": (  # the code stands, the message is the type's
        lambda s: s.Echo(R(action="set_code_then_raise")),
        "ALREADY_EXISTS",
        "Exception calling application: ValueError",
        1,
        0,
    ),
    "unary no response": (
        lambda s: s.Echo(R(action="none")),
        "INTERNAL",
        "the handler returned no response",
        1,
        0,
    ),
    "unary no response after OK as a number": (
        lambda s: s.Echo(R(action="none_ok_number")),
        "INTERNAL",
        "the handler returned no response",
        1,
        0,
    ),
    "server stream ok": (lambda s: list(s.ListThings(R(text="l"))), "OK", "", 1, 3),
    "server stream abort": (
        lambda s: list(s.ListThings(R(action="abort"))),
        "NOT_FOUND",
        "no such thing",
        1,
        1,
    ),
    "server stream raise": (
        lambda s: list(s.ListThings(R(action="raise"))),
        "UNKNOWN",
        "Exception calling application: ValueError",
        1,
        1,
    ),
    "client stream ok": (
        lambda s: s.UploadThings(requests(R(text="a"), R(text="b"))),
        "OK",
        "",
        2,
        1,
    ),
    "client stream abort": (
        lambda s: s.UploadThings(requests(R(text="a"), R(action="abort"))),
        "NOT_FOUND",
        "no such thing",
        2,
        0,
    ),
    "client stream abort_with_status": (
        lambda s: s.UploadThings(requests(R(action="abort_with_status"))),
        "INVALID_ARGUMENT",
        "bad text",
        1,
        0,
    ),
    "bidi ok": (
        lambda s: list(s.ChatThings(requests(R(text="a"), R(text="b"), R(text="c")))),
        "OK",
        "",
        3,
        3,
    ),
    "bidi abort": (
        lambda s: list(s.ChatThings(requests(R(text="a"), R(action="abort")))),
        "NOT_FOUND",
        "no such thing",
        2,
        1,
    ),
    "bidi raise": (
        lambda s: list(s.ChatThings(requests(R(action="raise")))),
        "UNKNOWN",
        "Exception calling application: ValueError",
        1,
        0,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_every_shape_and_outcome_gives_one_event_with_the_final_status(
    harness: Harness, case: str
) -> None:
    call, status, error, sent, received = CASES[case]
    client_code = code_of(lambda: call(harness.stub))
    event = harness.one_event()
    assert client_code.name == status
    assert event.response.response_status == status
    assert event.response.response_code == client_code.value[0]
    assert event.response.response_error == error
    assert event.request.message_count == sent
    assert event.response.message_count == received
    assert event.version == "2"
    assert event.service == "auditline_testing.v1.EchoService"
    assert event.request.source_ip == "127.0.0.1"
    assert event.request.user_agent.startswith("grpc-python/")
    uuid.UUID(event.event_id)
    assert event.response.response_time.ToNanoseconds() >= (
        event.request.request_time.ToNanoseconds()
    )
    assert SECRET_IN_EXCEPTION not in str(event)


def test_a_handlers_exception_is_logged_without_its_message(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The asyncio interceptor logged the exception, message and all (a connection
    string, a key; found by a review helper): its type and frames only. (On the sync
    server gRPC's own logger writes the message, as it does without auditline.)"""
    code_of(lambda: harness.stub.Echo(R(action="raise")))
    harness.one_event()
    ours = [r for r in caplog.records if r.name.startswith("auditline")]
    assert all(SECRET_IN_EXCEPTION not in logging.Formatter().format(r) for r in ours)
    if harness.flavour != "sync":
        assert any("ValueError" in r.getMessage() for r in ours)


@pytest.mark.parametrize("action", ["number_code", "abort_number"])
@pytest.mark.parametrize("number", [0, 5])
def test_a_code_given_as_a_number_is_recorded_as_the_client_saw_it(
    harness: Harness, action: str, number: int
) -> None:
    """The sync server sends UNKNOWN for a code that is not a `StatusCode` (the asyncio
    one takes numbers); the log said the number's code (found by a review helper)."""
    client_code = code_of(lambda: harness.stub.Echo(R(action=action, count=number)))
    if harness.flavour == "sync":
        assert client_code == grpc.StatusCode.UNKNOWN
    event = harness.one_event()
    assert event.response.response_status == client_code.name
    assert event.response.response_code == client_code.value[0]


def test_rich_error_details_are_summarised(harness: Harness) -> None:
    code_of(lambda: harness.stub.Echo(R(action="abort_with_status")))
    assert list(harness.one_event().response.error_details) == [
        "BadRequest: text: must not be empty"
    ]


def test_deadline_exceeded(harness: Harness) -> None:
    text = f"deadline-{uuid.uuid4().hex}"
    code = code_of(lambda: harness.stub.Echo(R(action="wait", text=text), timeout=0.5))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert harness.one_event().response.response_status == "DEADLINE_EXCEEDED"


def test_cancelled_by_the_client(harness: Harness) -> None:
    text = f"cancel-{uuid.uuid4().hex}"
    future = harness.stub.Echo.future(R(action="wait", text=text), timeout=30)
    assert started(text).wait(10)
    future.cancel()
    event = harness.sink.wait_for(1)[0]
    assert event.response.response_status == "CANCELLED"


def test_a_stream_counts_only_the_messages_sent_before_the_client_went(
    harness: Harness,
) -> None:
    """The client reads one message and cancels while the handler makes the next: the
    sync server counted that one too, which gRPC sent nowhere (found by a review
    helper)."""
    text = f"cancel-{uuid.uuid4().hex}"
    stream = harness.stub.ListThings(R(action="wait", text=text), timeout=30)
    assert next(stream).text
    assert started(text).wait(10)
    stream.cancel()
    event = harness.sink.wait_for(1)[0]
    assert event.response.response_status == "CANCELLED"
    assert event.response.message_count == 1


def test_unknown_method_is_audited(harness: Harness) -> None:
    call = raw_call(harness.channel, "/auditline_testing.v1.EchoService/NoSuchMethod")
    assert code_of(lambda: call(b"")) == grpc.StatusCode.UNIMPLEMENTED
    event = harness.one_event()
    assert (event.service, event.method) == ("auditline_testing.v1.EchoService", "NoSuchMethod")
    assert event.response.response_status == "UNIMPLEMENTED"


def test_undeserializable_request_is_audited_as_invalid_argument(harness: Harness) -> None:
    call = raw_call(harness.channel, "/auditline_testing.v1.EchoService/Echo")
    assert code_of(lambda: call(b"\xff\xff\xff")) == grpc.StatusCode.INVALID_ARGUMENT
    event = harness.one_event()
    assert event.response.response_status == "INVALID_ARGUMENT"
    assert json_format.MessageToDict(event.request.request_params) == {"unparseable_bytes": 3}
    # And the server keeps serving.
    assert harness.stub.Echo(R(text="after")).text == "after"


def test_an_undeserializable_message_in_a_request_stream_is_counted(harness: Harness) -> None:
    # The same in both flavours: the malformed message was received, so it is counted
    # and its bytes are what the event says of the request.
    multicallable: Any = harness.channel.stream_unary(
        "/auditline_testing.v1.EchoService/UploadThings"
    )
    code = code_of(lambda: multicallable(iter([b"\xff\xff\xff"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    event = harness.one_event()
    assert event.response.response_status == "INVALID_ARGUMENT"
    assert event.request.message_count == 1
    assert json_format.MessageToDict(event.request.request_params) == {"unparseable_bytes": 3}


class _DenySync(grpc.ServerInterceptor):
    """Rejects calls without `x-allow` metadata, as an authentication interceptor would."""

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        if ("x-allow", "yes") in details.invocation_metadata:
            return continuation(details)

        def deny(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no credentials")

        return grpc.unary_unary_rpc_method_handler(deny)


class _DenyAsync(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        if ("x-allow", "yes") in details.invocation_metadata:
            return await continuation(details)

        async def deny(request: Any, context: Any) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no credentials")

        return grpc.unary_unary_rpc_method_handler(deny)


class _BrokenSync(grpc.ServerInterceptor):
    def intercept_service(self, continuation: Any, details: Any) -> Any:
        raise RuntimeError("interceptor bug")


class _BrokenAsync(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        raise RuntimeError("interceptor bug")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_calls_rejected_by_an_inner_interceptor_are_audited(flavour: str, audit_mode: str) -> None:
    deny = _DenySync() if flavour == "sync" else _DenyAsync()
    h = Harness(flavour, inner=[deny], mode=audit_mode)
    try:
        assert code_of(lambda: h.stub.Echo(R(text="x"))) == grpc.StatusCode.UNAUTHENTICATED
        assert h.stub.Echo(R(text="y"), metadata=(("x-allow", "yes"),)).text == "y"
        rejected, allowed = h.events(2)
        assert rejected.response.response_status == "UNAUTHENTICATED"
        assert rejected.response.response_error == "no credentials"
        assert rejected.event_name == "Echo"
        assert allowed.response.response_status == "OK"
    finally:
        h.close()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_inner_interceptor_that_raises_is_audited(flavour: str, audit_mode: str) -> None:
    h = Harness(
        flavour,
        mode=audit_mode,
        inner=[_BrokenSync() if flavour == "sync" else _BrokenAsync()],
    )
    try:
        assert code_of(lambda: h.stub.Echo(R(text="x"))) == grpc.StatusCode.UNKNOWN
        event = h.one_event()
        assert event.response.response_status == "UNKNOWN"
        assert event.response.response_error == "Exception servicing handler: RuntimeError"
    finally:
        h.close()


class _FailingSink:
    def emit(self, event: Event) -> None:
        raise OSError("disk full")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_failing_sink_never_breaks_the_call(flavour: str) -> None:
    h = Harness(flavour, sink=_FailingSink())
    try:
        assert h.stub.Echo(R(text="still works")).text == "still works"
        assert h.interceptor.flush(10)
        assert h.interceptor.sink_errors == 1
    finally:
        h.close()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_fail_closed_fails_the_call_when_the_sink_cannot_take_its_event(flavour: str) -> None:
    h = Harness(flavour, sink=_FailingSink(), fail_closed=True)
    try:
        assert code_of(lambda: h.stub.Echo(R(text="x"))) == grpc.StatusCode.UNAVAILABLE
    finally:
        h.close()
    ok = Harness(flavour, fail_closed=True)
    try:
        assert ok.stub.Echo(R(text="y")).text == "y"
        # Emitted before the call returned: no flush needed.
        assert len(ok.sink.events) == 1
    finally:
        ok.close()


def _normalised(events: list[Event]) -> list[dict[str, Any]]:
    out = []
    for event in events:
        data = json_format.MessageToDict(event)
        for volatile in ("EventId",):
            data.pop(volatile, None)
        for half, keys in (
            ("Request", ("RequestTime", "SourcePort")),
            ("Response", ("ResponseTime",)),
        ):
            for key in keys:
                data[half].pop(key, None)
        out.append(data)
    return out


def test_sync_and_async_servers_produce_identical_events(audit_mode: str) -> None:
    def run_all(h: Harness) -> list[dict[str, Any]]:
        for name in sorted(CASES):
            code_of(lambda call=CASES[name][0]: call(h.stub))  # type: ignore[misc]
        code_of(lambda: raw_call(h.channel, "/auditline_testing.v1.EchoService/Nope")(b""))
        return _normalised(h.events(len(CASES) + 1))

    by_flavour = {}
    for flavour in FLAVOURS:
        h = Harness(flavour, mode=audit_mode)
        try:
            by_flavour[flavour] = run_all(h)
        finally:
            h.close()
    assert len(by_flavour["sync"]) == len(CASES) + 1
    assert by_flavour["sync"] == by_flavour["aio"] == by_flavour["aio-reader-writer"]


class _Details(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


def test_async_handlers_stay_coroutines_and_async_generators() -> None:
    sink = MemorySink()
    interceptor = AsyncAuditInterceptor(sink)

    async def unary(request: Any, context: Any) -> Any:
        return request

    async def stream(request: Any, context: Any) -> Any:
        yield request

    import asyncio

    async def wrap(handler: Any) -> Any:
        async def continuation(details: Any) -> Any:
            return handler

        details: Any = _Details("/auditline_testing.v1.EchoService/Echo", ())
        return await interceptor.intercept_service(continuation, details)

    # Unary-request methods are served as request-streaming ones (their request read
    # by the interceptor).
    wrapped = asyncio.run(wrap(grpc.unary_unary_rpc_method_handler(unary)))
    assert inspect.iscoroutinefunction(wrapped.stream_unary)
    wrapped = asyncio.run(wrap(grpc.unary_stream_rpc_method_handler(stream)))
    assert inspect.isasyncgenfunction(wrapped.stream_stream)
    wrapped = asyncio.run(wrap(grpc.stream_stream_rpc_method_handler(stream)))
    assert inspect.isasyncgenfunction(wrapped.stream_stream)


def test_sync_handlers_on_an_asyncio_server_are_audited() -> None:
    """grpc.aio runs plain functions and generators too (with a migration pool)."""
    import asyncio
    from concurrent import futures

    sink = MemorySink()
    interceptor = AsyncAuditInterceptor(sink)

    def echo(request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoResponse:
        return echo_pb2.EchoResponse(text=request.text)

    def listing(request: echo_pb2.EchoRequest, context: Any) -> Iterator[echo_pb2.EchoResponse]:
        for index in range(3):
            yield echo_pb2.EchoResponse(text=request.text, index=index)

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(
            echo,
            request_deserializer=echo_pb2.EchoRequest.FromString,
            response_serializer=echo_pb2.EchoResponse.SerializeToString,
        ),
        "ListThings": grpc.unary_stream_rpc_method_handler(
            listing,
            request_deserializer=echo_pb2.EchoRequest.FromString,
            response_serializer=echo_pb2.EchoResponse.SerializeToString,
        ),
    }
    loop = asyncio.new_event_loop()
    thread = __import__("threading").Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[Any, int]:
        server = grpc.aio.server(
            interceptors=[interceptor], migration_thread_pool=futures.ThreadPoolExecutor(2)
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("auditline_testing.v1.EchoService", handlers)]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = echo_pb2_grpc.EchoServiceStub(channel)
            assert stub.Echo(R(text="sync"), timeout=10).text == "sync"
            assert [r.index for r in stub.ListThings(R(text="gen"), timeout=10)] == [0, 1, 2]
        first, second = sink.wait_for(2)
        assert (first.event_name, first.response.response_status) == ("Echo", "OK")
        assert (second.event_name, second.response.message_count) == ("ListThings", 3)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        interceptor.close()


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("length", [40, 20_000])
def test_an_uncaught_exception_s_message_never_reaches_the_client(
    flavour: str, audit_mode: str, length: int
) -> None:
    """gRPC sends an uncaught exception's message as the status message: it may hold
    secrets, and a long one makes the client see RESOURCE_EXHAUSTED while the log says
    UNKNOWN. The client is told what the log says: the exception's type."""
    harness = Harness(flavour, mode=audit_mode)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            harness.stub.Echo(R(action="raise", text="x" * length))
        event = harness.one_event()
    finally:
        harness.close()
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert error.details() == "Exception calling application: ValueError"
    assert event.response.response_status == "UNKNOWN"
    assert event.response.response_error == error.details()


class _SecondMessageUnsendable(grpc.ServerInterceptor):
    """Behind the audit interceptor: ListThings answers one message, then an object
    that cannot be serialized."""

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        if not details.method.endswith("/ListThings"):
            return continuation(details)

        def things(request: Any, context: Any) -> Iterator[Any]:
            yield echo_pb2.EchoResponse(text="sent")
            yield {"not": "a message"}

        return grpc.unary_stream_rpc_method_handler(
            things,
            request_deserializer=R.FromString,
            response_serializer=echo_pb2.EchoResponse.SerializeToString,
        )


def _unsendable_plain(request: Any, context: Any) -> Iterator[Any]:
    yield echo_pb2.EchoResponse(text="sent")
    yield {"not": "a message"}


async def _unsendable_async(request: Any, context: Any) -> AsyncIterator[Any]:
    yield echo_pb2.EchoResponse(text="sent")
    yield {"not": "a message"}


@pytest.mark.parametrize("style", ["sync", "aio generator", "aio async generator"])
def test_a_message_that_cannot_be_serialized_is_logged_as_the_client_saw(
    audit_mode: str, style: str
) -> None:
    """Serialized by the interceptor, and counted once serialized. On the sync server
    such a message was counted; on the asyncio server, which serialized it itself,
    the failure was taken for the client's cancel (logged CANCELLED) and its
    exception's own text sent to the client (both found by a review helper)."""
    if style == "sync":
        h = Harness("sync", mode=audit_mode, inner=[_SecondMessageUnsendable()])
    else:
        things = _unsendable_plain if style == "aio generator" else _unsendable_async
        h = Harness("aio", mode=audit_mode, inner=[_Handlers({"ListThings": things})])
    try:
        responses = h.stub.ListThings(R(text="x"), timeout=30)
        assert next(responses).text == "sent"
        with pytest.raises(grpc.RpcError) as failed:
            next(responses)
        assert failed.value.code() == grpc.StatusCode.UNKNOWN
        assert failed.value.details() == "Exception calling application: TypeError"
        (event,) = h.events(1)
        assert event.response.response_status == "UNKNOWN"
        assert event.response.response_error == failed.value.details()
        assert event.response.message_count == 1
    finally:
        h.close()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_calls_the_server_cancels_as_it_stops_are_logged_unavailable(
    flavour: str, audit_mode: str
) -> None:
    """Told that the server stops (`stopping`, before `server.stop`), the calls it
    cancels are logged as their clients saw them, UNAVAILABLE "Cancelling all calls",
    not as the clients' own cancels (found by a review helper)."""
    h = Harness(flavour, mode=audit_mode)
    try:
        text = uuid.uuid4().hex
        call = h.stub.Echo.future(R(action="wait", text=text), timeout=30)
        assert started(text).wait(10)
        h.interceptor.stopping(0)
        h.server.stop()
        assert code_of(call.result) == grpc.StatusCode.UNAVAILABLE
        assert call.details() == "Cancelling all calls"
        (event,) = h.sink.wait_for(1)
        assert event.response.response_status == "UNAVAILABLE"
        # The sync handler returns once woken by the cancel: what it did is done.
        finished = "; the handler had answered OK" if flavour == "sync" else ""
        assert event.response.response_error == "Cancelling all calls" + finished
    finally:
        h.channel.close()
        h.interceptor.close()
        if h.spooled is not None:
            h.spooled.close()


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_rich_details_too_large_for_clients_are_dropped_and_logged_as_seen(
    flavour: str, audit_mode: str, fail_closed: bool
) -> None:
    """Trailing metadata past what clients take (8-16 KB) made the client see
    RESOURCE_EXHAUSTED while the log kept the handler's code (found by a review
    helper): such rich details are dropped, the code and message go out, and the log
    says what the client saw."""
    h = Harness(flavour, mode=audit_mode, fail_closed=fail_closed)
    try:
        for violations, kept in ((10, True), (400, False)):
            with pytest.raises(grpc.RpcError) as failed:
                h.stub.Echo(R(action="abort_with_status", count=violations), timeout=30)
            assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert failed.value.details() == "bad text"
            trailers: Any = failed.value.trailing_metadata() or ()
            assert any(key == "grpc-status-details-bin" for key, _ in trailers) is kept
        small, large = h.events(2)
        for event in (small, large):
            assert event.response.response_status == "INVALID_ARGUMENT"
            assert event.response.response_error == "bad text"
        assert small.response.error_details
        assert not large.response.error_details
    finally:
        h.close()


def test_what_goes_out_is_measured_as_it_travels() -> None:
    """A status message is percent-encoded outside printable ASCII and a binary
    trailer base64-encoded: measured by their raw size, a non-ASCII message with rich
    details passed, and about a third of clients then saw RESOURCE_EXHAUSTED while
    the log said INVALID_ARGUMENT; the handler's own large trailers were never cut
    (both found by a review helper)."""
    message = "é" * 3000
    cut = sendable(message)
    assert cut is not None
    assert len(quote(cut, safe=PRINTABLE_BUT_PERCENT)) <= MAX_SENT_DETAILS_BYTES
    assert message.startswith(cut)
    assert sendable("a" * 2000) is None  # printable ASCII travels as it is
    details = ("grpc-status-details-bin", b"\0" * 4500)
    assert sendable_trailers((details, ("k", "v")), "é" * 680) == (("k", "v"),)
    assert sendable_trailers((("x-big", "v" * 20_000),), "nope") == ()
    assert sendable_trailers((details,), "short") is None


# What grpc-message leaves as it is: printable ASCII but "%".
PRINTABLE_BUT_PERCENT = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
