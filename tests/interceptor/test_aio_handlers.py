"""The asyncio interceptor and what handlers do on a grpc.aio server: an abort with the
OK code answers as gRPC's sync server does (UNKNOWN); plain (not async) handlers run in
a thread, where their abort ends them, as on a sync server; a cancel that comes while
a handler holds the event loop is logged as the client saw it; a call whose coroutine
is closed with its event loop is logged cancelled."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest
from auditline_testing.v1 import echo_pb2, echo_pb2_grpc
from google.protobuf import json_format

from auditline.interceptor import AsyncAuditInterceptor, MemorySink
from tests.interceptor.harness import FLAVOURS, KEY, Event, Harness, R
from tests.support.echo import ECHO_INITIAL, ECHO_TRAILING, AsyncServer, SyncEcho, started
from tests.support.outcome import code_of, error_of

# How long a client waits for an answer that should come at once: a call that never
# gets one fails on this deadline instead of hanging the test.
PROMPT = 5.0


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_abort_with_ok_answers_unknown_as_the_sync_server_does(
    flavour: str, audit_mode: str, fail_closed: bool
) -> None:
    # gRPC's sync server turns abort(OK) into UNKNOWN without a message; grpc.aio alone
    # never answers it. Every flavour answers, and logs, what the sync one does.
    h = Harness(flavour, mode=audit_mode, fail_closed=fail_closed)
    try:
        unary = error_of(lambda: h.stub.Echo(R(action="status", count=0), timeout=PROMPT))
        stream = error_of(
            lambda: list(h.stub.ChatThings(iter([R(action="status", count=0)]), timeout=PROMPT))
        )
        for error in (unary, stream):
            assert (error.code(), error.details()) == (grpc.StatusCode.UNKNOWN, "")
        for event in h.events(2):
            assert event.response.response_status == "UNKNOWN"
            assert event.response.response_error == ""
    finally:
        h.close()


# --- plain (not async) handlers on an asyncio server ---------------------------------


class _Registered:
    """Stands in for a server: keeps what `add_EchoServiceServicer_to_server` registers."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}  # grpc.RpcMethodHandler

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers again, by method below

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.handlers.update({f"/{service}/{name}": h for name, h in handlers.items()})


class _Handlers(grpc.aio.ServerInterceptor):
    """Behind the audit interceptor, serves the echo service with `SyncEcho`'s plain
    functions and generators (grpc.aio runs such handlers in a thread pool) instead of
    the asyncio server's coroutines; `overrides` (behaviors by method name) replace
    some of them."""

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        registered = _Registered()
        server: Any = registered  # typed grpc.Server
        echo_pb2_grpc.add_EchoServiceServicer_to_server(SyncEcho(), server)
        self._handlers = registered.handlers
        for name, behavior in (overrides or {}).items():
            make = (
                grpc.unary_stream_rpc_method_handler
                if name == "ListThings"
                else grpc.unary_unary_rpc_method_handler
            )
            self._handlers[f"{SERVICE}/{name}"] = make(
                behavior,
                request_deserializer=R.FromString,
                response_serializer=echo_pb2.EchoResponse.SerializeToString,
            )

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = self._handlers.get(details.method)
        return handler if handler is not None else await continuation(details)


SERVICE = "/auditline_testing.v1.EchoService"


def plain(mode: str, overrides: dict[str, Any] | None = None, **options: Any) -> Harness:
    """An asyncio server whose handlers are plain functions and generators."""
    return Harness("aio", mode=mode, inner=[_Handlers(overrides)], **options)


def _observed(call: Callable[[], Any]) -> tuple[str, str, int]:
    """What a client saw: the code, the message, and how many responses it received."""
    received = 0
    try:
        result = call()
        if isinstance(result, Iterator):
            for _ in result:
                received += 1
        else:
            received = 1
    except grpc.RpcError as error:
        return error.code().name, error.details() or "", received
    return "OK", "", received


def _undeserializable_stream(h: Harness) -> Any:
    upload: Any = h.channel.stream_unary(f"{SERVICE}/UploadThings")
    return upload(iter([b"\xff\xff\xff"]))


# Calls whose handlers abort, raise, set a principal or metadata, in every shape.
PLAIN_CALLS: dict[str, Callable[[Harness], Any]] = {
    "unary ok": lambda h: h.stub.Echo(R(text="hi")),
    "unary denied": lambda h: h.stub.Echo(R(action="status", count=7, text="not yours")),
    "unary abort_with_status": lambda h: h.stub.Echo(R(action="abort_with_status")),
    "unary raise": lambda h: h.stub.Echo(R(action="raise")),
    "unary set_code": lambda h: h.stub.Echo(R(action="set_code")),
    "unary principal": lambda h: h.stub.Echo(R(action="principal")),
    "unary metadata": lambda h: h.stub.Echo(
        R(text="m"), metadata=((ECHO_INITIAL, "initial"), (ECHO_TRAILING, b"\xab"))
    ),
    "server stream ok": lambda h: h.stub.ListThings(R(text="l")),
    "server stream abort": lambda h: h.stub.ListThings(R(action="abort")),
    "client stream ok": lambda h: h.stub.UploadThings(iter([R(text="a"), R(text="b")])),
    "client stream abort": lambda h: h.stub.UploadThings(iter([R(text="a"), R(action="abort")])),
    "client stream undeserializable": _undeserializable_stream,
    "bidi ok": lambda h: h.stub.ChatThings(iter([R(text="a"), R(text="b")])),
    "bidi abort": lambda h: h.stub.ChatThings(iter([R(text="a"), R(action="abort")])),
}


def _normalised(event: Event) -> dict[str, Any]:
    data = json_format.MessageToDict(event)
    data.pop("EventId")
    data["Request"].pop("RequestTime")
    data["Request"].pop("SourcePort", None)
    data["Response"].pop("ResponseTime")
    return data


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
def test_plain_handlers_answer_and_are_logged_as_on_a_sync_server(
    audit_mode: str, fail_closed: bool
) -> None:
    # A plain handler's abort ends it with its status: the client never gets the data
    # it would have returned after the abort, and the event says what the client saw.
    seen: dict[str, list[tuple[str, str, int]]] = {}
    events: dict[str, list[dict[str, Any]]] = {}
    for flavour in ("sync", "plain"):
        h = (
            Harness("sync", mode=audit_mode, fail_closed=fail_closed)
            if flavour == "sync"
            else plain(audit_mode, fail_closed=fail_closed)
        )
        try:
            seen[flavour] = [_observed(functools.partial(call, h)) for call in PLAIN_CALLS.values()]
            # Compared in no order: they are logged as they settle, which need not be
            # the calls' order (an asyncio call may first wait a moment for a client's
            # cancel, `_aio_settle`; CI once found another call's event in the denied one's
            # place).
            events[flavour] = sorted(
                (_normalised(event) for event in h.events(len(PLAIN_CALLS))),
                key=lambda event: json.dumps(event, sort_keys=True),
            )
        finally:
            h.close()
    denied = list(PLAIN_CALLS).index("unary denied")
    assert seen["plain"][denied] == ("PERMISSION_DENIED", "not yours", 0)
    assert [
        event["Response"]["ResponseError"]
        for event in events["plain"]
        if event["Response"]["ResponseStatus"] == "PERMISSION_DENIED"
    ] == ["not yours"]
    # The codes and the messages received; a raise's message is grpc.aio's own.
    assert [(code, count) for code, _, count in seen["plain"]] == [
        (code, count) for code, _, count in seen["sync"]
    ]
    assert events["plain"] == events["sync"]


class _BlockedUntilItEnds:
    """A plain unary handler that blocks its thread until its call ends, as
    `add_callback` tells it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.ended = threading.Event()
        self.returned = threading.Event()
        self.active_after_end: bool | None = None

    def __call__(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoResponse:
        assert context.add_callback(self.ended.set)
        assert context.is_active()
        self.started.set()
        self.ended.wait(30)
        self.active_after_end = context.is_active()
        self.returned.set()
        return echo_pb2.EchoResponse(text=request.text)


def test_a_blocking_plain_handler_leaves_the_event_loop_serving(audit_mode: str) -> None:
    blocked = _BlockedUntilItEnds()
    h = plain(audit_mode, {"Echo": blocked})
    try:
        waiting = h.stub.Echo.future(R(text="blocked"), timeout=30)
        assert blocked.started.wait(PROMPT)
        # Its thread is blocked, not the event loop: other calls are served meanwhile.
        assert h.stub.CreateThing(R(text="meanwhile"), timeout=PROMPT).text == "meanwhile"
        waiting.cancel()
        # The call's end is told to the handler (add_callback), which then returns.
        assert blocked.returned.wait(PROMPT)
        assert blocked.active_after_end is False
        statuses = {e.event_name: e.response.response_status for e in h.events(2)}
        assert statuses == {"MakeThing": "OK", "Echo": "CANCELLED"}  # CreateThing's event name
    finally:
        h.close()


def test_fail_closed_plain_handlers_aborting_together_all_answer() -> None:
    # As many handlers as the event loop's default executor has threads (and the
    # interceptor's own pool) abort at once. Were they run in that executor, each would
    # wait in abort for the keeping of its events, which needs a thread of that same
    # executor (for a sink without keep_documents), and no call would ever end.
    count = min(32, (os.cpu_count() or 1) + 4)
    together = threading.Barrier(count)

    def deny(request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoResponse:
        together.wait(PROMPT)
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")
        return echo_pb2.EchoResponse(text="data")

    h = plain("in-process", {"Echo": deny}, fail_closed=True)
    try:
        calls = [h.stub.Echo.future(R(text=f"call {i}"), timeout=PROMPT * 2) for i in range(count)]
        codes = [code_of(call.result) for call in calls]
        assert codes == [grpc.StatusCode.PERMISSION_DENIED] * count
        assert {e.response.response_status for e in h.events(count)} == {"PERMISSION_DENIED"}
    finally:
        h.close()


# --- a handler that holds the event loop -----------------------------------------------


class _HoldsTheLoop:
    """Async handlers that never await while they work: they hold the event loop (as
    CPU work or a blocking call would) for `request.count` milliseconds."""

    def __init__(self) -> None:
        self.working = threading.Event()

    async def unary(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoResponse:
        self.working.set()
        time.sleep(request.count / 1000)  # the work: no await
        return echo_pb2.EchoResponse(text=request.text)

    async def stream(self, request: echo_pb2.EchoRequest, context: Any) -> AsyncIterator[Any]:
        yield echo_pb2.EchoResponse(text=request.text)  # the headers go out with it
        self.working.set()
        time.sleep(request.count / 1000)


# Long enough for a cancel sent when the work begins to reach the server's gRPC over
# loopback, on a busy machine. Nothing on the server can say it arrived while the
# handler holds the loop: that is the case under test.
HOLD_MS = 1000


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
@pytest.mark.parametrize("shape", ["unary", "server stream"])
def test_a_cancel_that_comes_while_a_handler_holds_the_loop_is_logged(
    audit_mode: str, fail_closed: bool, shape: str
) -> None:
    held = _HoldsTheLoop()
    overrides = {"Echo": held.unary, "ListThings": held.stream}
    h = Harness("aio", mode=audit_mode, inner=[_Handlers(overrides)], fail_closed=fail_closed)
    try:
        if shape == "unary":
            call: Any = h.stub.Echo.future(R(text="held", count=HOLD_MS), timeout=30)
        else:
            call = h.stub.ListThings(R(text="held", count=HOLD_MS), timeout=30)
            assert next(call).text == "held"
        assert held.working.wait(PROMPT)
        call.cancel()
        (event,) = h.events(1)
        assert event.response.response_status == "CANCELLED"
        # A call that held the loop as briefly, and was not cancelled, answers as usual.
        held.working.clear()
        if shape == "unary":
            assert h.stub.Echo(R(text="kept", count=20), timeout=PROMPT).text == "kept"
        else:
            assert [r.text for r in h.stub.ListThings(R(text="kept", count=20))] == ["kept"]
        assert h.events(2)[1].response.response_status == "OK"
    finally:
        h.close()


def test_a_handler_that_awaits_is_not_taken_for_one_that_held_the_loop() -> None:
    """Only a handler during which the loop had no turn free asks the client before it
    answers (an extra batch, or a wait): one that awaited a slow call does not."""
    import asyncio
    import time as _time

    from auditline.interceptor._aio_settle import LOOP_HEARTBEAT_SECONDS, LoopTurns

    async def run() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        turns = LoopTurns(LOOP_HEARTBEAT_SECONDS)
        turns.follow(loop)
        start = _time.monotonic()
        await asyncio.sleep(0.2)  # the loop free all along
        awaited = turns.held_for(loop, start)
        start = _time.monotonic()
        _time.sleep(0.2)  # the loop held
        held = turns.held_for(loop, start)
        turns.stop()
        return awaited, held

    awaited, held = asyncio.run(run())
    assert awaited < 0.1
    assert held >= 0.2


@pytest.mark.parametrize("interceptor_closed", [False, True], ids=["open", "closed"])
@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
def test_a_call_whose_coroutine_is_closed_unresumed_is_logged_cancelled(
    fail_closed: bool, interceptor_closed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """An event loop stopped and closed with a call in flight: the handler's coroutine
    is closed by the garbage collector, outside the call's context and with nothing
    that can be awaited. The call is still logged, as cancelled (its client got no
    answer); when that comes after the interceptor closed, its loss is in the log.
    Until 2026-12-07 resetting the call's scope raised ValueError there, and the call
    went unlogged."""
    sink = MemorySink()
    interceptor = AsyncAuditInterceptor(sink, hmac_key=KEY, fail_closed=fail_closed)
    server = AsyncServer([interceptor])
    channel = grpc.insecure_channel(server.target)
    text = f"closed-{uuid.uuid4().hex}"
    answer = echo_pb2_grpc.EchoServiceStub(channel).Echo.future(R(action="wait", text=text))
    try:
        assert started(text).wait(PROMPT)
        server.loop.call_soon_threadsafe(server.loop.stop)
        server.thread.join(PROMPT)
        # The call's task (gRPC's name for it), closed as the garbage collector would.
        (call,) = [
            task
            for task in asyncio.all_tasks(server.loop)
            if getattr(task.get_coro(), "__name__", "") == "_handle_exceptions"
        ]
        if interceptor_closed:
            interceptor.close()
        call.get_coro().close()  # raised RuntimeError (GeneratorExit ignored) before
        if interceptor_closed:
            assert not sink.events
            assert "came after the interceptor closed and is lost: " in caplog.text
            assert "/auditline_testing.v1.EchoService/Echo" in caplog.text
        else:
            assert interceptor.flush(PROMPT)
            (event,) = sink.events
            assert event.request.request_params["text"] == text
            assert event.response.response_status == "CANCELLED"
    finally:
        answer.cancel()
        channel.close()
        server.loop.run_until_complete(server.server.stop(0))
        server.loop.close()
        interceptor.close()


# --- a handler that catches the cancel --------------------------------------------------


class _CatchesTheCancel:
    """An async handler that catches the CancelledError of its call's cancel and then
    answers anyway, as cleanup code may: returns, raises another error, or aborts."""

    def __init__(self) -> None:
        self.waiting = threading.Event()

    async def unary(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoResponse:
        try:
            self.waiting.set()
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if request.text == "raise":
                raise RuntimeError("cleanup failed") from None
            if request.text == "abort":
                await context.abort(grpc.StatusCode.ABORTED, "interrupted")
        return echo_pb2.EchoResponse(text="the cleanup's answer")


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
@pytest.mark.parametrize("then", ["return", "raise", "abort"])
@pytest.mark.parametrize("ended", ["cancel", "deadline"])
def test_a_handler_that_catches_the_cancel_and_answers_is_logged_as_the_client_saw(
    audit_mode: str, fail_closed: bool, then: str, ended: str
) -> None:
    """The client saw CANCELLED (DEADLINE_EXCEEDED); the log said OK with the response
    no one received, UNKNOWN or ABORTED (found by a review helper)."""
    handler = _CatchesTheCancel()
    h = Harness(
        "aio", mode=audit_mode, inner=[_Handlers({"Echo": handler.unary})], fail_closed=fail_closed
    )
    try:
        if ended == "cancel":
            call = h.stub.Echo.future(R(text=then), timeout=30)
            assert handler.waiting.wait(PROMPT)
            assert call.cancel()
            expected = grpc.StatusCode.CANCELLED
        else:
            call = h.stub.Echo.future(R(text=then), timeout=1)
            expected = grpc.StatusCode.DEADLINE_EXCEEDED
            assert code_of(call.result) == expected
        (event,) = h.events(1)
        assert event.response.response_status == expected.name
        assert not event.response.response_body.ListFields()  # no answer was received
    finally:
        h.close()


def test_a_handler_that_answered_before_its_deadline_was_noticed_is_logged_so(
    audit_mode: str,
) -> None:
    """A handler that held the loop past the client's deadline, then answered OK: the
    deadline's notice came while the interceptor settled the status, and the record
    lost that the handler had answered (what it did is done; a review helper)."""
    held = _HoldsTheLoop()
    h = Harness("aio", mode=audit_mode, inner=[_Handlers({"Echo": held.unary})])
    try:
        call = h.stub.Echo.future(R(text="late", count=300), timeout=0.1)
        assert code_of(call.result) == grpc.StatusCode.DEADLINE_EXCEEDED
        (event,) = h.events(1)
        assert event.response.response_status == "DEADLINE_EXCEEDED"
        assert event.response.response_error == "Deadline Exceeded; the handler had answered OK"
    finally:
        h.close()
