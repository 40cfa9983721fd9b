"""A sync call's record waits for the call's end (gRPC's termination callback) before it
is handed on; a flush waits for the calls whose status is on its way; a call whose end
never comes is recorded as it stood."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from auditline_testing.v1 import echo_pb2

from auditline.interceptor import MemorySink
from auditline.interceptor._record import CallRecord
from tests.interceptor.records import audit_core, echo_record


def _record(outcome: Callable[[], bool | None]) -> CallRecord:
    return echo_record(
        echo_pb2.EchoRequest(text="t"),
        echo_pb2.EchoResponse(text="t"),
        unary_response=True,
        outcome=outcome,
    )


class _Call:
    """A call whose end the test decides: `add_callback` as gRPC's sync context has it."""

    def __init__(self) -> None:
        self.ended: bool | None = None  # None while it runs; then whether cancelled
        self.callbacks: list[Callable[[], None]] = []

    def outcome(self) -> bool | None:
        return self.ended

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if self.ended is not None:
            return False
        self.callbacks.append(callback)
        return True

    def end(self, *, cancelled: bool) -> None:
        self.ended = cancelled
        for callback in self.callbacks:
            callback()


def test_the_record_waits_for_the_calls_end_and_a_flush_waits_with_it() -> None:
    sink = MemorySink()
    core = audit_core(sink)
    call = _Call()
    core.submit(_record(call.outcome), wait=False, when_ended=call.add_callback)
    try:
        assert not core.flush(0.05)  # its status is still on its way
        assert sink.events == []
        call.end(cancelled=True)
        assert core.flush(10)
        (event,) = sink.events
        # The client cancelled before the status reached it: so says the event.
        assert event.response.response_status == "CANCELLED"
    finally:
        core.close()


def test_a_call_that_had_ended_already_is_handed_on_at_once() -> None:
    sink = MemorySink()
    core = audit_core(sink)
    call = _Call()
    call.end(cancelled=False)
    core.submit(_record(call.outcome), wait=False, when_ended=call.add_callback)
    try:
        assert core.flush(10)
        (event,) = sink.events
        assert event.response.response_status == "OK"
    finally:
        core.close()


def test_a_call_whose_end_never_comes_is_recorded_as_it_stood() -> None:
    sink = MemorySink()
    core = audit_core(sink)
    core.settle_timeout = 0.05
    call = _Call()  # never ends
    core.submit(_record(call.outcome), wait=False, when_ended=call.add_callback)
    try:
        (event,) = sink.wait_for(1)
        assert event.response.response_status == "OK"
        assert core.flush(10)
        call.end(cancelled=True)  # too late: recorded once, as it stood
        assert core.flush(10)
        assert len(sink.events) == 1
    finally:
        core.close()


def test_closing_records_the_calls_still_on_their_way() -> None:
    sink = MemorySink()
    core = audit_core(sink)
    call = _Call()  # never ends
    core.submit(_record(call.outcome), wait=False, when_ended=call.add_callback)
    core.close()
    assert [e.response.response_status for e in sink.events] == ["OK"]


def test_records_without_an_outcome_are_handed_on_as_they_are() -> None:
    sink = MemorySink()
    core = audit_core(sink)
    record = dataclasses.replace(_record(lambda: None), outcome=None)
    core.submit(record, wait=False, when_ended=_Call().add_callback)
    try:
        assert core.flush(10)
        assert len(sink.events) == 1
    finally:
        core.close()
