"""An interop suite after gRPC's cross-language interop test descriptions
(doc/interop-test-descriptions.md in grpc/grpc), run against sync and asyncio servers
with and without the audit interceptor.

For every case: what the client observes (code, message, initial and trailing
metadata, rich status, the messages received) is the same with the interceptor as
without it; with it there is exactly one event per call, whose code is the code the
client saw and whose response `MessageCount` is the number of messages the client
received. Cancellations and deadlines are repeated so that a race shows up as a
failure, not as luck.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from auditline_testing.v1 import echo_pb2, echo_pb2_grpc
from grpc_status import rpc_status

from auditline.interceptor import AsyncAuditInterceptor, AuditInterceptor, MemorySink, Sink
from tests.interceptor.harness import FLAVOURS, MODES
from tests.support.echo import (
    ECHO_INITIAL,
    ECHO_TRAILING,
    SECRET_IN_EXCEPTION,
    AsyncServer,
    SyncServer,
    started,
)
from tests.support.worker_pipelines import SpooledEvents

R = echo_pb2.EchoRequest
REPEATS = 20
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"


@dataclasses.dataclass(frozen=True)
class Observed:
    """What a client saw of one call."""

    code: str
    details: str
    initial: tuple[tuple[str, Any], ...]
    trailing: tuple[tuple[str, Any], ...]
    rich: bytes | None
    responses: tuple[bytes, ...]


class Requests:
    """A request stream the test feeds, and can leave open (a client that waits)."""

    def __init__(self, *items: echo_pb2.EchoRequest) -> None:
        self._queue: queue.Queue[echo_pb2.EchoRequest | None] = queue.Queue()
        for item in items:
            self._queue.put(item)

    def put(self, item: echo_pb2.EchoRequest) -> None:
        self._queue.put(item)

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Requests:
        return self

    def __next__(self) -> echo_pb2.EchoRequest:
        item = self._queue.get()
        if item is None:
            raise StopIteration
        return item


def _metadata(items: Any) -> tuple[tuple[str, Any], ...]:
    return tuple((key, value) for key, value in items or ())


def _observe(call: Any, responses: list[Any], error: grpc.RpcError | None) -> Observed:
    source: Any = error if error is not None else call  # an RpcError is a Call too
    status = rpc_status.from_call(source) if error is not None else None
    return Observed(
        code=source.code().name,
        details=source.details() or "",
        initial=_metadata(source.initial_metadata()),
        trailing=_metadata(source.trailing_metadata()),
        rich=status.SerializeToString() if status is not None else None,
        responses=tuple(r.SerializeToString() for r in responses),
    )


def unary(method: str, request: echo_pb2.EchoRequest, **options: Any) -> Case:
    def run(stub: echo_pb2_grpc.EchoServiceStub) -> Observed:
        try:
            response, call = getattr(stub, method).with_call(request, timeout=30, **options)
        except grpc.RpcError as error:
            return _observe(None, [], error)
        return _observe(call, [response], None)

    return run


def streaming(
    method: str, request: Any, *, cancel_after: int | None = None, **options: Any
) -> Case:
    """A call with a response stream: read everything, or cancel after that many."""

    def run(stub: echo_pb2_grpc.EchoServiceStub) -> Observed:
        options.setdefault("timeout", 30)
        argument = request() if callable(request) else request
        call = getattr(stub, method)(argument, **options)
        received: list[Any] = []
        try:
            for response in call:
                received.append(response)
                if cancel_after is not None and len(received) >= cancel_after:
                    call.cancel()
        except grpc.RpcError as error:
            return _observe(None, received, error)
        finally:
            if isinstance(argument, Requests):
                argument.close()  # the client's sending thread may end
        return _observe(call, received, None)

    return run


def client_streaming(requests: Callable[[], Any], *, cancel: bool = False, **options: Any) -> Case:
    """A client-streaming call; with `cancel`, the client sends one message, waits until
    the server has it (so that the call surely began) and cancels."""

    def run(stub: echo_pb2_grpc.EchoServiceStub) -> Observed:
        argument = requests()
        options.setdefault("timeout", 30)
        text = f"begun-{uuid.uuid4().hex}"
        if cancel:
            argument.put(R(text=text))
        future = stub.UploadThings.future(argument, **options)
        if cancel:
            assert started(text).wait(10)
            future.cancel()
        try:
            response = future.result()
        except grpc.RpcError as error:
            return _observe(None, [], error)
        except grpc.FutureCancelledError:
            return Observed("CANCELLED", "", (), (), None, ())
        finally:
            if isinstance(argument, Requests):
                argument.close()
        return _observe(future, [response], None)

    return run


Case = Callable[[echo_pb2_grpc.EchoServiceStub], Observed]


def _waiting(*first: echo_pb2.EchoRequest) -> Callable[[], Requests]:
    """Requests that never end: the client keeps the stream open."""
    return lambda: Requests(*first)


def _messages(*texts: str) -> Callable[[], Iterator[echo_pb2.EchoRequest]]:
    return lambda: iter([R(text=text) for text in texts])


CASES: dict[str, Case] = {
    "empty_unary": unary("Echo", R()),
    "large_unary": unary("Echo", R(text="x" * 271_828)),
    "client_streaming": client_streaming(_messages("a" * 27182, "b" * 8, "c" * 1828, "d" * 45904)),
    "server_streaming": streaming("ListThings", R(text="s", count=4)),
    "ping_pong": streaming("ChatThings", _messages("a", "b", "c", "d")),
    "empty_stream": streaming("ChatThings", _messages()),
    "custom_metadata unary": unary(
        "Echo", R(text="m"), metadata=((ECHO_INITIAL, "test_initial"), (ECHO_TRAILING, b"\xab\xab"))
    ),
    "custom_metadata stream": streaming(
        "ChatThings",
        _messages("m"),
        metadata=((ECHO_INITIAL, "test_initial"), (ECHO_TRAILING, b"\xab\xab")),
    ),
    "status_code_and_message unary": unary("Echo", R(action="status", count=2, text="test status")),
    "status_code_and_message stream": streaming(
        "ChatThings", lambda: iter([R(action="status", count=2, text="test status")])
    ),
    "special_status_message": unary("Echo", R(action="status", count=2, text=SPECIAL_MESSAGE)),
    "unary set_code and a message": unary("Echo", R(action="set_code")),
    "unary raise": unary("Echo", R(action="raise")),
    "unary abort_with_status": unary("Echo", R(action="abort_with_status")),
    "server stream abort": streaming("ListThings", R(action="abort")),
    "bidi raise": streaming("ChatThings", lambda: iter([R(text="a"), R(action="raise")])),
    "compression": unary("Echo", R(text="z" * 10_000), compression=grpc.Compression.Gzip),
}
# Cancellations and deadlines: each repeated, to catch races.
RACES: dict[str, Case] = {
    "cancel_after_begin": client_streaming(_waiting(), cancel=True),
    "cancel_after_first_response": streaming("ChatThings", _waiting(R(text="a")), cancel_after=1),
    "timeout_on_sleeping_server": streaming("ChatThings", _waiting(R(text="a")), timeout=0.2),
    "client streaming deadline": client_streaming(_waiting(R(text="a")), timeout=0.2),
}


class Server:
    """An echo server of one flavour, with or without the audit interceptor (building
    events in the serving process, or in an audit worker)."""

    def __init__(self, flavour: str, audited: bool, mode: str = "in-process") -> None:
        self.flavour = flavour
        self.spooled = SpooledEvents() if audited and mode == "worker" else None
        memory = MemorySink()
        self.sink: MemorySink | SpooledEvents = self.spooled or memory
        audit_sink: Sink = self.spooled.worker if self.spooled is not None else memory
        self.interceptor: AuditInterceptor | AsyncAuditInterceptor | None = None
        if flavour == "sync":
            if audited:
                self.interceptor = AuditInterceptor(audit_sink)
            self.server: SyncServer | AsyncServer = SyncServer(
                [self.interceptor] if self.interceptor else []
            )
        else:
            if audited:
                self.interceptor = AsyncAuditInterceptor(audit_sink)
            self.server = AsyncServer(
                [self.interceptor] if self.interceptor else [],
                reader_writer=flavour == "aio-reader-writer",
            )
        if self.spooled is not None:
            self.spooled.attach(self.interceptor)
        self.channel = grpc.insecure_channel(self.server.target)
        self.stub = echo_pb2_grpc.EchoServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.stop()
        if self.interceptor is not None:
            self.interceptor.close()
        if self.spooled is not None:
            self.spooled.close()


@pytest.fixture(
    scope="module", params=list(itertools.product(FLAVOURS, MODES)), ids=lambda p: "-".join(p)
)
def servers(request: pytest.FixtureRequest) -> Iterator[tuple[Server, Server]]:
    flavour, mode = request.param
    bare, audited = Server(flavour, False), Server(flavour, True, mode)
    yield bare, audited
    bare.close()
    audited.close()


def _audited_once(server: Server, case: Case) -> tuple[Observed, Any]:
    """Run a case on the audited server; return what the client saw and its one event."""
    assert server.interceptor is not None
    before = len(server.sink.events)
    observed = case(server.stub)
    events = server.sink.wait_for(before + 1)
    assert server.interceptor.flush(10)
    # The event may be settled when the call terminates, after the client saw it.
    events = server.sink.events[before:]
    assert len(events) == 1, [e.event_name for e in events]
    return observed, events[0]


@pytest.mark.parametrize("name", CASES)
def test_the_interceptor_changes_nothing_a_client_sees_and_logs_what_it_saw(
    servers: tuple[Server, Server], name: str
) -> None:
    bare, audited = servers
    case = CASES[name]
    expected = case(bare.stub)
    observed, event = _audited_once(audited, case)
    if name.endswith(" raise"):
        # The one difference, on purpose: gRPC sends an uncaught exception's message
        # (secrets, perhaps); with the interceptor the client is told its type only.
        assert SECRET_IN_EXCEPTION in expected.details
        expected = dataclasses.replace(
            expected, details="Exception calling application: ValueError"
        )
    assert observed == expected
    assert event.response.response_status == observed.code
    assert event.response.response_error == observed.details or observed.code == "OK"
    assert event.response.message_count == len(observed.responses)


@pytest.mark.parametrize("name", RACES)
def test_cancellations_and_deadlines_are_logged_as_the_client_saw_them(
    servers: tuple[Server, Server], name: str
) -> None:
    bare, audited = servers
    case = RACES[name]
    expected = case(bare.stub)
    for _ in range(REPEATS):
        observed, event = _audited_once(audited, case)
        assert observed.code == expected.code
        assert event.response.response_status == observed.code
        assert event.response.message_count >= len(observed.responses)


def test_unimplemented_method_and_service(servers: tuple[Server, Server]) -> None:
    bare, audited = servers
    for method in ("/auditline_testing.v1.EchoService/Nothing", "/no.such.Service/Call"):

        def case(stub: Any, method: str = method) -> Observed:
            channel = bare.channel if stub is bare.stub else audited.channel
            try:
                multicallable: Any = channel.unary_unary(method)  # typed Never without serializers
                _, call = multicallable.with_call(b"", timeout=30)
            except grpc.RpcError as error:
                return _observe(None, [], error)
            return _observe(call, [], None)

        expected = case(bare.stub)
        observed, event = _audited_once(audited, case)
        assert observed == expected
        assert observed.code == "UNIMPLEMENTED"
        assert event.response.response_status == "UNIMPLEMENTED"
