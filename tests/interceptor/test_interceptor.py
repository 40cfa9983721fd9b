"""The audit interceptor through real gRPC channels: every shape, outcome and flavour."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import pytest
from auditline_testing.v1 import echo_pb2, echo_pb2_grpc
from google.protobuf import json_format

from auditline.audit.v1 import event_pb2, options_pb2
from auditline.interceptor import (
    AsyncAuditInterceptor,
    AuditInterceptor,
    MemorySink,
    Principal,
    PrincipalInput,
    hmac_value,
)
from tests.support.api import code_of
from tests.support.echo import SECRET_IN_EXCEPTION, AsyncServer, SyncServer, started

KEY = b"test-hmac-key"
FLAVOURS = ("sync", "aio", "aio-reader-writer")
Event = event_pb2.ApiEvent


class Harness:
    """A server of one flavour with the audit interceptor first in its chain."""

    def __init__(
        self,
        flavour: str,
        *,
        inner: Sequence[Any] = (),
        address: str = "127.0.0.1:0",
        sink: Any = None,
        **options: Any,
    ) -> None:
        self.sink = sink if sink is not None else MemorySink()
        options.setdefault("hmac_key", KEY)
        self.interceptor: AuditInterceptor | AsyncAuditInterceptor
        self.server: SyncServer | AsyncServer
        if flavour == "sync":
            self.interceptor = AuditInterceptor(self.sink, **options)
            self.server = SyncServer([self.interceptor, *inner], address)
        else:
            self.interceptor = AsyncAuditInterceptor(self.sink, **options)
            self.server = AsyncServer(
                [self.interceptor, *inner],
                address=address,
                reader_writer=flavour == "aio-reader-writer",
            )
        self.channel = grpc.insecure_channel(self.server.target)
        self.stub = echo_pb2_grpc.EchoServiceStub(self.channel)

    def events(self, count: int) -> list[Event]:
        """Exactly `count` events. The client may see the status before the server
        finished recording the call, so wait for them rather than only flush."""
        self.sink.wait_for(count)
        assert self.interceptor.flush(10)
        assert len(self.sink.events) == count
        return list(self.sink.events)

    def one_event(self) -> Event:
        (event,) = self.events(1)
        return event

    def close(self) -> None:
        self.channel.close()
        self.server.stop()
        self.interceptor.close()


@pytest.fixture(params=FLAVOURS)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(request.param)
    yield h
    h.close()


def raw_call(channel: grpc.Channel, method: str) -> Callable[[bytes], bytes]:
    """A unary call that sends and receives bytes as they are (no serializers)."""
    call: Any = channel.unary_unary(method)  # typed Never without serializers
    return call  # type: ignore[no-any-return]


def requests(*items: echo_pb2.EchoRequest) -> Iterator[echo_pb2.EchoRequest]:
    return iter(items)


# --- every call shape and every outcome ---------------------------------------

R = echo_pb2.EchoRequest
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
    "unary no response": (
        lambda s: s.Echo(R(action="none")),
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


def test_rich_error_details_are_summarised(harness: Harness) -> None:
    code_of(lambda: harness.stub.Echo(R(action="abort_with_status")))
    assert list(harness.one_event().response.error_details) == [
        "BadRequest: text: must not be empty"
    ]


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
def test_calls_rejected_by_an_inner_interceptor_are_audited(flavour: str) -> None:
    deny = _DenySync() if flavour == "sync" else _DenyAsync()
    h = Harness(flavour, inner=[deny])
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
def test_an_inner_interceptor_that_raises_is_audited(flavour: str) -> None:
    h = Harness(flavour, inner=[_BrokenSync() if flavour == "sync" else _BrokenAsync()])
    try:
        assert code_of(lambda: h.stub.Echo(R(text="x"))) == grpc.StatusCode.UNKNOWN
        event = h.one_event()
        assert event.response.response_status == "UNKNOWN"
        assert event.response.response_error == "Exception servicing handler: RuntimeError"
    finally:
        h.close()


def test_principal_from_the_handler(harness: Harness) -> None:
    harness.stub.Echo(R(action="principal"))
    request = harness.one_event().request
    assert (request.account_name, request.access_key) == ("alice", "AKALICE")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_principal_resolver_metadata_allowlist_and_never_recorded_headers(flavour: str) -> None:
    seen: list[PrincipalInput] = []

    def resolve(call: PrincipalInput) -> Principal | None:
        seen.append(call)
        return Principal("from-resolver", "AKRESOLVED")

    h = Harness(
        flavour,
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
def test_ipv6_peer(flavour: str) -> None:
    h = Harness(flavour, address="[::1]:0")
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
def test_x_forwarded_for_only_from_trusted_proxies(trusted: tuple[str, ...], expected: str) -> None:
    h = Harness("sync", trusted_proxies=trusted)
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


def test_bodies_over_the_cap_are_truncated_and_flagged() -> None:
    h = Harness("sync", max_body_bytes=300)
    try:
        h.stub.Echo(R(text="x" * 2000, count=7))
        request = h.one_event().request
        assert request.params_truncated
        params = json_format.MessageToDict(request.request_params)
        assert "text" not in params
        assert len(json_format.MessageToJson(request.request_params)) < 600
    finally:
        h.close()


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


def test_sync_and_async_servers_produce_identical_events() -> None:
    def run_all(h: Harness) -> list[dict[str, Any]]:
        for name in sorted(CASES):
            code_of(lambda call=CASES[name][0]: call(h.stub))  # type: ignore[misc]
        code_of(lambda: raw_call(h.channel, "/auditline_testing.v1.EchoService/Nope")(b""))
        return _normalised(h.events(len(CASES) + 1))

    by_flavour = {}
    for flavour in FLAVOURS:
        h = Harness(flavour)
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

    wrapped = asyncio.run(wrap(grpc.unary_unary_rpc_method_handler(unary)))
    assert inspect.iscoroutinefunction(wrapped.unary_unary)
    wrapped = asyncio.run(wrap(grpc.unary_stream_rpc_method_handler(stream)))
    assert inspect.isasyncgenfunction(wrapped.unary_stream)
    wrapped = asyncio.run(wrap(grpc.stream_stream_rpc_method_handler(stream)))
    assert inspect.isasyncgenfunction(wrapped.stream_stream)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_unix_socket_peer(flavour: str, tmp_path: Path) -> None:
    socket_path = tmp_path / "echo.sock"
    h = Harness(flavour, address=f"unix:{socket_path}")
    try:
        h.stub.Echo(R(text="unix"))
        assert h.one_event().request.source_ip.startswith("unix:")
    finally:
        h.close()


def test_trace_ids_from_the_active_opentelemetry_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from auditline.interceptor._record import trace_ids as _trace_ids

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("call") as span:
        context = span.get_span_context()
        assert _trace_ids(()) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert _trace_ids(()) == ("", "")


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
