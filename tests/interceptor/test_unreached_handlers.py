"""Calls to unary-request methods on the sync server that end before any handler runs:
without their request message, cancelled or expired while they wait for a server thread
or for their request. gRPC's sync server ends them itself, before any behavior runs;
with the interceptor each is answered as gRPC would answer it, and audited once with
the status its client saw."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from auditline_testing.v1 import echo_pb2_grpc

from auditline.interceptor import AuditInterceptor, MemorySink
from tests.interceptor.harness import KEY, Harness, R
from tests.support.echo import RAN, SyncEcho, SyncServer, started

ECHO = "/auditline_testing.v1.EchoService/Echo"
LIST = "/auditline_testing.v1.EchoService/ListThings"
SEEN_KEY = "x-test-seen"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _status(call: Callable[[], Any]) -> tuple[str, str]:
    """The code and message a call ended with."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code().name, error.details() or ""
    return "OK", ""


def _without_request(channel: grpc.Channel, method: str) -> tuple[str, str]:
    """Call a unary-request method sending no request message, as a request stream
    that ends at once."""
    if method == ECHO:
        unary: Any = channel.stream_unary(method)  # typed Never without serializers
        return _status(lambda: unary(iter(()), timeout=10))
    streaming: Any = channel.stream_stream(method)
    return _status(lambda: list(streaming(iter(()), timeout=10)))


class _Seen(grpc.ServerInterceptor):
    """Sets an event when the server has a call whose metadata names it (inner, after
    the audit interceptor: the call has reached the server, its behavior is next)."""

    def __init__(self) -> None:
        self.events: dict[str, threading.Event] = {}

    def event(self, name: str) -> threading.Event:
        return self.events.setdefault(name, threading.Event())

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        for key, value in handler_call_details.invocation_metadata or ():
            if key == SEEN_KEY:
                self.event(value).set()
        return continuation(handler_call_details)


def _silent(closed: threading.Event) -> Iterator[bytes]:
    """A request stream that sends nothing, and ends when the test closes it."""
    closed.wait(60)
    yield from ()


@pytest.mark.parametrize("method", [ECHO, LIST])
def test_a_call_without_its_request_message_is_answered_as_grpc_does_and_audited(
    method: str, audit_mode: str
) -> None:
    bare = SyncServer([])
    bare_channel = grpc.insecure_channel(bare.target)
    audited = Harness("sync", mode=audit_mode)
    try:
        expected = _without_request(bare_channel, method)
        observed = _without_request(audited.channel, method)
        assert observed == expected
        assert expected[0] == "UNIMPLEMENTED"
        assert "requires exactly one request message" in expected[1]
        event = audited.one_event()
        assert event.response.response_status == "UNIMPLEMENTED"
        assert event.response.response_error == observed[1]
        assert event.request.message_count == 0
    finally:
        bare_channel.close()
        bare.stop()
        audited.close()


def test_calls_that_end_while_waiting_for_a_server_thread_are_audited() -> None:
    """One thread, busy: calls queued behind it expire or are cancelled before gRPC
    gives them a thread; their handlers never run, and each has its event."""
    sink = MemorySink()
    audit = AuditInterceptor(sink, hmac_key=KEY)
    executor = futures.ThreadPoolExecutor(max_workers=1)
    server = grpc.server(executor, interceptors=[audit])
    echo_pb2_grpc.add_EchoServiceServicer_to_server(SyncEcho(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = echo_pb2_grpc.EchoServiceStub(channel)
    try:
        blocker_text = _unique("blocker")
        blocker = stub.Echo.future(R(text=blocker_text, action="wait"), timeout=30)
        assert started(blocker_text).wait(10)
        texts = [_unique("queued") for _ in range(4)]
        expiring = [stub.Echo.future(R(text=text), timeout=2) for text in texts[:2]]
        expiring_stream = stub.ListThings(R(text=texts[2]), timeout=2)
        cancelled = stub.Echo.future(R(text=texts[3]), timeout=30)
        # The server has them all, queued behind the busy thread.
        deadline = time.monotonic() + 10
        while executor._work_queue.qsize() < 4:  # the executor's queue: the test owns it
            assert time.monotonic() < deadline, "the server did not queue the calls"
            time.sleep(0.01)
        cancelled.cancel()
        expired = [_status(call.result) for call in expiring]
        expired.append(_status(lambda: list(expiring_stream)))
        assert expired == [("DEADLINE_EXCEEDED", "Deadline Exceeded")] * 3
        blocker.cancel()  # its handler returns, and the queued calls get the thread
        sink.wait_for(5)
        assert audit.flush(10)
        statuses = Counter(e.response.response_status for e in sink.events)
        assert statuses == {"DEADLINE_EXCEEDED": 3, "CANCELLED": 2}
        assert not RAN.intersection(texts)  # no handler ran for them
    finally:
        channel.close()
        server.stop(0).wait()
        audit.close()


@pytest.mark.parametrize("method", [ECHO, LIST])
@pytest.mark.parametrize("ending", ["cancelled", "deadline"])
def test_calls_that_end_while_waiting_for_their_request_are_audited(
    method: str, ending: str
) -> None:
    seen = _Seen()
    harness = Harness("sync", inner=[seen])
    name = _unique("silent")
    closed = threading.Event()
    options: dict[str, Any] = {
        "timeout": 30 if ending == "cancelled" else 2,
        "metadata": ((SEEN_KEY, name),),
    }
    try:
        call: Any
        if method == ECHO:
            unary: Any = harness.channel.stream_unary(method)  # typed Never without serializers
            call = unary.future(_silent(closed), **options)
        else:
            streaming: Any = harness.channel.stream_stream(method)
            call = streaming(_silent(closed), **options)
        assert seen.event(name).wait(10)
        if ending == "cancelled":
            call.cancel()
        event = harness.one_event()
        expected = "CANCELLED" if ending == "cancelled" else "DEADLINE_EXCEEDED"
        assert event.response.response_status == expected
        assert event.request.message_count == 0
    finally:
        closed.set()
        harness.close()
