"""Calls to unary-request methods on the asyncio server that end before any handler
runs: without their request message, cancelled or expired while the server waits for
it. grpc.aio reads a unary request before any behavior runs and ends such calls on
its own, unaudited (one without a message waited for its deadline); the interceptor
serves these methods as request-streaming ones and reads the request itself, so each
is answered as gRPC's sync server answers it and audited once with the status its
client saw (found by a review helper)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tests.interceptor.harness import Harness
from tests.interceptor.test_unreached_handlers import (
    ECHO,
    LIST,
    SEEN_KEY,
    _silent_call,
    _without_request,
)
from tests.support.echo import SyncServer

ASYNC_FLAVOURS = ("aio", "aio-reader-writer")


class _Seen(grpc.aio.ServerInterceptor):
    """Sets an event when the server has a call whose metadata names it (behind the
    audit interceptor: the call has reached the server, its behavior is next)."""

    def __init__(self) -> None:
        self.events: dict[str, threading.Event] = {}

    def event(self, name: str) -> threading.Event:
        return self.events.setdefault(name, threading.Event())

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        for key, value in handler_call_details.invocation_metadata or ():
            if key == SEEN_KEY:
                self.event(value).set()
        return await continuation(handler_call_details)


@pytest.fixture(scope="module")
def sync_answer() -> Iterator[dict[str, tuple[str, str]]]:
    """What gRPC's sync server answers each method's call without a request."""
    bare = SyncServer([])
    channel = grpc.insecure_channel(bare.target)
    yield {method: _without_request(channel, method) for method in (ECHO, LIST)}
    channel.close()
    bare.stop()


@pytest.mark.parametrize("flavour", ASYNC_FLAVOURS)
@pytest.mark.parametrize("method", [ECHO, LIST])
def test_a_call_without_its_request_message_is_answered_as_grpc_sync_does_and_audited(
    flavour: str, method: str, audit_mode: str, sync_answer: dict[str, tuple[str, str]]
) -> None:
    audited = Harness(flavour, mode=audit_mode)
    try:
        observed = _without_request(audited.channel, method)
        # The sync server names the method only when it is not registered with it.
        assert observed[0] == sync_answer[method][0] == "UNIMPLEMENTED"
        assert observed[1] == f'"{method.encode()!r}" requires exactly one request message.'
        assert sync_answer[method][1].endswith('" requires exactly one request message.')
        event = audited.one_event()
        assert event.response.response_status == "UNIMPLEMENTED"
        assert event.response.response_error == observed[1]
        assert event.request.message_count == 0
    finally:
        audited.close()


@pytest.mark.parametrize("flavour", ASYNC_FLAVOURS)
@pytest.mark.parametrize("method", [ECHO, LIST])
@pytest.mark.parametrize("ending", ["cancelled", "deadline"])
def test_calls_that_end_while_waiting_for_their_request_are_audited(
    flavour: str, method: str, ending: str
) -> None:
    seen = _Seen()
    harness = Harness(flavour, inner=[seen])
    name = f"silent-{uuid.uuid4().hex}"
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
