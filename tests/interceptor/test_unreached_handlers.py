"""Calls to unary-request methods that end before any handler runs:
without their request message, cancelled or expired while they wait for a server thread
or for their request, or whose request does not come within `request_timeout`. gRPC's
sync server ends the first ones itself, before any behavior runs; with the interceptor
each is answered as gRPC would answer it, and audited once with the status its client
saw."""

from __future__ import annotations

import gc
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
from auditline.interceptor._unary_request import RequestWait
from tests.interceptor.harness import FLAVOURS, KEY, Harness, R
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


class _AioSeen(grpc.aio.ServerInterceptor):
    """`_Seen` on the asyncio server."""

    def __init__(self) -> None:
        self.events: dict[str, threading.Event] = {}

    def event(self, name: str) -> threading.Event:
        return self.events.setdefault(name, threading.Event())

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        for key, value in handler_call_details.invocation_metadata or ():
            if key == SEEN_KEY:
                self.event(value).set()
        return await continuation(handler_call_details)


def _silent(closed: threading.Event) -> Iterator[bytes]:
    """A request stream that sends nothing, and ends when the test closes it."""
    closed.wait(60)
    yield from ()


@pytest.mark.parametrize("method", [ECHO, LIST])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_call_without_its_request_message_is_answered_as_grpc_does_and_audited(
    method: str, audit_mode: str, flavour: str
) -> None:
    """As gRPC's sync server answers; on the asyncio server too, where grpc.aio let
    such a call wait for its deadline, unaudited (found by a review helper)."""
    bare = SyncServer([])
    bare_channel = grpc.insecure_channel(bare.target)
    audited = Harness(flavour, mode=audit_mode)
    try:
        expected = _without_request(bare_channel, method)
        observed = _without_request(audited.channel, method)
        assert expected[0] == observed[0] == "UNIMPLEMENTED"
        assert "requires exactly one request message" in expected[1]
        if flavour == "sync":
            assert observed == expected
        else:  # the sync server names the method only when it is not registered with it
            assert observed[1] == f'"{method.encode()!r}" requires exactly one request message.'
        event = audited.one_event()
        assert event.response.response_status == "UNIMPLEMENTED"
        assert event.response.response_error == observed[1]
        assert event.request.message_count == 0
    finally:
        bare_channel.close()
        bare.stop()
        audited.close()


class _OneThread:
    """A sync echo server with a single thread, the audit interceptor first."""

    def __init__(self, **options: Any) -> None:
        self.sink = MemorySink()
        self.audit = AuditInterceptor(self.sink, hmac_key=KEY, **options)
        self.executor = futures.ThreadPoolExecutor(max_workers=1)
        self.server = grpc.server(self.executor, interceptors=[self.audit])
        echo_pb2_grpc.add_EchoServiceServicer_to_server(SyncEcho(), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = echo_pb2_grpc.EchoServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0).wait()
        self.audit.close()


def _silent_call(
    channel: grpc.Channel, method: str, closed: threading.Event, **options: Any
) -> Any:
    """A call to `method` whose request never comes: a future, or a response stream."""
    if method == ECHO:
        unary: Any = channel.stream_unary(method)  # typed Never without serializers
        return unary.future(_silent(closed), **options)
    streaming: Any = channel.stream_stream(method)
    return streaming(_silent(closed), **options)


def _ending(call: Any, method: str) -> tuple[str, str]:
    return _status(call.result if method == ECHO else lambda: list(call))


def test_calls_that_end_while_waiting_for_a_server_thread_are_audited() -> None:
    """One thread, busy: calls queued behind it expire or are cancelled before gRPC
    gives them a thread; their handlers never run, and each has its event."""
    served = _OneThread()
    executor, stub, sink, audit = served.executor, served.stub, served.sink, served.audit
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
        served.close()


@pytest.mark.parametrize("method", [ECHO, LIST])
@pytest.mark.parametrize("ending", ["cancelled", "deadline"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_calls_that_end_while_waiting_for_their_request_are_audited(
    method: str, ending: str, flavour: str
) -> None:
    """On the asyncio server too: grpc.aio read a unary request before any behavior
    ran, and ended these calls unaudited (found by a review helper); the interceptor
    reads it itself there as well (`one_request`)."""
    seen: _Seen | _AioSeen = _Seen() if flavour == "sync" else _AioSeen()
    harness = Harness(flavour, inner=[seen])
    name = _unique("silent")
    closed = threading.Event()
    options: dict[str, Any] = {
        "timeout": 30 if ending == "cancelled" else 2,
        "metadata": ((SEEN_KEY, name),),
    }
    try:
        call = _silent_call(harness.channel, method, closed, **options)
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


@pytest.mark.parametrize("method", [ECHO, LIST])
def test_a_request_that_does_not_come_in_time_is_cancelled_and_audited(method: str) -> None:
    """The server's one thread waits for a request that never comes: past the bound
    the call is cancelled and recorded, and the thread serves the next call."""
    served = _OneThread(request_timeout=0.3)
    closed = threading.Event()
    try:
        # Its deadline is far past the bound (unbounded, it would end DEADLINE_EXCEEDED).
        call = _silent_call(served.channel, method, closed, timeout=10)
        assert _ending(call, method) == ("CANCELLED", "CANCELLED")
        text = _unique("next")
        assert served.stub.Echo(R(text=text), timeout=10).text == text
        served.sink.wait_for(2)
        assert served.audit.flush(10)
        cancelled, served_next = sorted(
            served.sink.events, key=lambda e: e.response.response_status
        )
        assert cancelled.response.response_status == "CANCELLED"
        assert cancelled.response.response_error == "no request message within 0.3 s"
        assert cancelled.request.message_count == 0
        assert served_next.response.response_status == "OK"
    finally:
        closed.set()
        served.close()


def test_the_bound_is_on_the_wait_for_the_request_not_on_the_handler() -> None:
    harness = Harness("sync", request_timeout=0.05)
    try:
        text = _unique("slow")
        call = harness.stub.Echo.future(R(text=text, action="wait"), timeout=30)
        assert started(text).wait(10)
        # Ten times the bound (and its ticks) later, the handler's call still runs.
        with pytest.raises(grpc.FutureTimeoutError):
            call.exception(timeout=0.5)
        call.cancel()
        event = harness.one_event()
        assert event.response.response_status == "CANCELLED"
        expected = "Cancelled by the client; the handler had answered OK"
        assert event.response.response_error == expected
    finally:
        harness.close()


class _Context:
    """What `RequestWait` uses of a call's context."""

    def __init__(self) -> None:
        self.cancels = 0

    def cancel(self) -> bool:
        self.cancels += 1
        return True


def test_a_waiting_call_is_either_taken_back_or_cancelled_once() -> None:
    wait = RequestWait(0.001)
    try:
        in_time, late = _Context(), _Context()
        ticket = wait.begin(in_time)  # type: ignore[arg-type]
        assert wait.end(ticket)
        ticket = wait.begin(late)  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while not late.cancels:  # by this thread or the watch's, whichever comes first
            assert time.monotonic() < deadline, "the overdue call was not cancelled"
            wait.cancel_overdue()
        wait.cancel_overdue()
        assert not wait.end(ticket)
        assert (in_time.cancels, late.cancels) == (0, 1)
    finally:
        wait.close(10)


def test_the_watch_thread_ends_with_close_or_its_interceptor() -> None:
    with pytest.raises(ValueError, match="positive"):
        RequestWait(0)
    for closing in (True, False):
        wait = RequestWait(0.05)
        wait.end(wait.begin(_Context()))  # type: ignore[arg-type]
        thread = wait._thread
        assert thread is not None
        assert thread.is_alive()
        if closing:
            wait.close(10)
        else:
            del wait  # dropped unclosed: the thread holds it weakly
            gc.collect()
        thread.join(10)
        assert not thread.is_alive()
    assert AuditInterceptor(MemorySink(), request_timeout=None)._request_wait is None
