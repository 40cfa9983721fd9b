"""Whether a client is still there when a grpc.aio call answers, where grpc.aio may
not have told the call yet (`settle_before_status`), and when each event loop last had
a turn free (`LoopTurns`), which says whether a handler may have kept a cancel's
notice from it; a unary call's one request read (`one_request`), which asks the same."""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

import grpc

from auditline.interceptor._aio_call import AioCall

__all__ = [
    "CANCEL_NOTICE_SECONDS",
    "HELD_LOOP_SECONDS",
    "LOOP_HEARTBEAT_SECONDS",
    "LoopTurns",
    "one_request",
    "settle_before_status",
]

# How long a call whose request stream ended, and whose headers went out, waits for
# grpc.aio's notice that the client cancelled. Measured: 0.14 ms median, 0.8 ms at
# most, with the other core busy. The bound is the GIL: gRPC's poller thread, which
# delivers the notice, may wait a switch interval (5 ms) for it, and under a whole
# test suite's load on two cores a 5 ms wait was once too short (the event said OK,
# the client saw CANCELLED): two intervals. (grpc.aio does not tell afterwards: a
# done callback's `cancelled()` is False for such a call.)
CANCEL_NOTICE_SECONDS = 0.01
# A handler during which the event loop had no turn free for this long (`LoopTurns`:
# busy, or blocked in a call it did not await) may have kept a client's cancel from
# grpc.aio, which learns of it only when the loop turns, after the status is gone. So
# the call asks before it answers: a batch (~70 us measured), or once headers went out
# a wait of `CANCEL_NOTICE_SECONDS`. A handler that awaited (the loop free) does not
# ask; nor a shorter hold, which a heartbeat behind a busy loop's other calls could
# look like, and within which a cancel's notice may not have reached the loop anyway.
HELD_LOOP_SECONDS = 0.02
LOOP_HEARTBEAT_SECONDS = 0.005


class LoopTurns:
    """When each event loop last had a turn free: a heartbeat per loop every
    `interval`, started with the loop's first call. A handler that held the loop (busy,
    or blocked in a call it did not await) stopped the heartbeat meanwhile; one that
    awaited (a database, a sleep) did not. One timer a loop, whatever the calls."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, float] = (
            weakref.WeakKeyDictionary()
        )
        self._stopped = False

    def follow(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop not in self._last and not self._stopped:
            self._beat(loop)

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        self._last[loop] = time.monotonic()
        if not self._stopped:
            loop.call_later(self._interval, self._beat, loop)

    def held_for(self, loop: asyncio.AbstractEventLoop, since: float) -> float:
        """How long the loop has had no turn free, counted from `since` at most."""
        return time.monotonic() - max(since, self._last.get(loop, since))

    def stop(self) -> None:
        self._stopped = True


async def settle_before_status(
    call: AioCall, context: Any, *, turns: LoopTurns | None, fail_closed: bool
) -> None:
    """Learn whether the client is still there before the final status goes out,
    where grpc.aio may not have told the call yet:

    - its request stream ended: grpc.aio ends it the same way when the client
      half-closes and when it cancels or its deadline passes (the handler then
      returns normally), and its notice of a cancel may come a moment after. Not
      in fail-closed mode, where the event is made durable before the status
      goes out.
    - its handler may have held the event loop (`HELD_LOOP_SECONDS`), so that a
      cancel's notice is still waiting for the loop (in both modes, as the sync
      flavour asks whether the call is still active in both).

    grpc.aio tells the server only by cancelling the handler's task, and only while
    the final status is not sent. So: while no headers went out, sending them now
    tells at once (the batch fails when the client is gone, or the notice comes
    while it is on its way); otherwise the call waits up to
    `CANCEL_NOTICE_SECONDS` for that notice.
    """
    held = (
        turns is not None
        and turns.held_for(asyncio.get_running_loop(), call.resumed) >= HELD_LOOP_SECONDS
    )
    if context.done() or not (held or (call.eof and not fail_closed)):
        return
    try:
        if not call.headers_sent:
            try:
                await context.send_initial_metadata(())
            except grpc.aio.InternalError:  # the batch failed: the client is gone
                call.undelivered = True
            else:
                call.headers_sent = True
        else:
            await asyncio.sleep(CANCEL_NOTICE_SECONDS)
    except asyncio.CancelledError:
        call.undelivered = True
        raise


async def one_request(call: AioCall, context: Any, *, turns: LoopTurns | None) -> bytes | None:
    """A unary call's request message, read from its request stream (None: the client
    half-closed without one). A client gone meanwhile raises CancelledError, the
    handler task's own way out: grpc.aio ends the stream the same way when the client
    half-closes and when it cancels, and its notice of the cancel may come a moment
    after, so the call asks as before a status. Read with `context.read()`: through
    the request iterator's async generator, the asyncio benchmark's worker mode made
    0.76-0.77x of bare, against 0.86x so (2026-12-07, alternating runs)."""
    raw = await context.read()
    if raw is grpc.aio.EOF:
        call.eof = True
        await settle_before_status(call, context, turns=turns, fail_closed=False)
        if call.undelivered:
            raise asyncio.CancelledError from None
        return None
    call.resumed = time.monotonic()
    return raw  # type: ignore[no-any-return]
