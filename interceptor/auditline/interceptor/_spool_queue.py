"""`SpoolQueue`: the events a spool has taken and not yet written, in batches committed
together, and the fail-closed callers waiting for theirs.

A thread waits on the spool's condition (`Spool.emit_documents(wait=True)`). An asyncio
caller awaits a future that the spool's writer resolves (`Spool.keep_documents`), with
one `call_soon_threadsafe` per event loop each time batches are written, so the loop
is not blocked and no executor thread is held per call. Events not committed within
the spool's `block_timeout` are withdrawn, so that they never are: the caller answers
UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import Callable

from auditline.interceptor._spool_records import StoredEvent
from auditline.interceptor._types import AuditUnavailableError

__all__ = ["Refused", "SpoolBatch", "SpoolQueue", "too_late"]


def too_late() -> AuditUnavailableError:
    return AuditUnavailableError("the audit log could not record this call in time")


class SpoolBatch:
    """Events committed together. `state`: open (taking events), queued, writing, written."""

    __slots__ = ("items", "state", "waits", "written_ids")

    def __init__(self) -> None:
        self.items: list[StoredEvent] = []  # those still to write
        self.state = "open"
        # Items already committed while the rest waits (a full disk splits a batch).
        self.written_ids: set[int] = set()
        self.waits: list[AsyncWait] = []  # asyncio callers waiting for their items

    def holds_written(self, mine: set[int]) -> bool:
        """Whether the items whose ids are `mine` are committed."""
        return self.state == "written" or mine <= self.written_ids


# Told why an asyncio caller's events were withdrawn after it stopped waiting.
Refused = Callable[[Exception], object]


@dataclasses.dataclass(slots=True, kw_only=True, eq=False)
class AsyncWait:
    """One asyncio caller waiting for its items of a batch."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    batch: SpoolBatch
    items: list[StoredEvent]
    mine: set[int]
    deadline: float  # time.monotonic(): withdrawn if not committed by then
    refused_later: Refused | None


def _answer(waits: list[tuple[AsyncWait, Exception | None]]) -> None:
    """On the callers' loop: resolve their futures; a caller that was cancelled meanwhile
    is told of a refusal through `refused_later`."""
    for wait, error in waits:
        if not wait.future.done():
            if error is None:
                wait.future.set_result(None)
            else:
                wait.future.set_exception(error)
        elif error is not None and wait.refused_later is not None:
            wait.refused_later(error)


class _AsyncWaits:
    """The asyncio callers waiting, per batch. Not thread-safe: the spool's lock
    guards it; the writer thread settles it."""

    def __init__(self) -> None:
        self._batches: list[SpoolBatch] = []  # those with waits, oldest first

    def add(
        self,
        batch: SpoolBatch,
        items: list[StoredEvent],
        *,
        timeout: float,
        refused_later: Refused | None,
    ) -> asyncio.Future[None]:
        """The future an asyncio caller awaits for its items of `batch`."""
        loop = asyncio.get_running_loop()
        wait = AsyncWait(
            loop=loop,
            future=loop.create_future(),
            batch=batch,
            items=items,
            mine={id(item) for item in items},
            deadline=time.monotonic() + timeout,
            refused_later=refused_later,
        )
        if not batch.waits:
            self._batches.append(batch)
        batch.waits.append(wait)
        return wait.future

    def __bool__(self) -> bool:
        return bool(self._batches)

    def settle(self, withdraw: Callable[[SpoolBatch, list[StoredEvent]], None]) -> None:
        """Answer the callers whose items are committed, and withdraw (and refuse) those
        past their deadline, unless the writer has their batch in hand. Called by the
        writer, holding the lock."""
        now = time.monotonic()
        answers: dict[asyncio.AbstractEventLoop, list[tuple[AsyncWait, Exception | None]]] = {}
        for batch in list(self._batches):
            left = []
            for wait in batch.waits:
                if batch.holds_written(wait.mine):
                    answers.setdefault(wait.loop, []).append((wait, None))
                elif now >= wait.deadline and batch.state != "writing":
                    withdraw(batch, wait.items)
                    answers.setdefault(wait.loop, []).append((wait, too_late()))
                else:
                    left.append(wait)
            batch.waits = left
            if not left:
                self._batches.remove(batch)
        _send(answers)

    def fail_all(self, error: Exception) -> None:
        """The writer stopped: every caller still waiting is refused."""
        answers: dict[asyncio.AbstractEventLoop, list[tuple[AsyncWait, Exception | None]]] = {}
        for batch in self._batches:
            for wait in batch.waits:
                answers.setdefault(wait.loop, []).append((wait, error))
            batch.waits = []
        self._batches = []
        _send(answers)


def _send(
    answers: dict[asyncio.AbstractEventLoop, list[tuple[AsyncWait, Exception | None]]],
) -> None:
    for loop, waits in answers.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there
            loop.call_soon_threadsafe(_answer, waits)


class SpoolQueue:
    """Not thread-safe: the spool's lock guards it."""

    def __init__(self) -> None:
        self._batches: collections.deque[SpoolBatch] = collections.deque()
        self.waits = _AsyncWaits()

    def add(self, items: list[StoredEvent]) -> SpoolBatch:
        """Put one call's events in the open batch (a new one if none is); that batch."""
        batches = self._batches
        batch = batches[-1] if batches and batches[-1].state == "open" else None
        if batch is None:
            batch = SpoolBatch()
            batches.append(batch)
        batch.items += items
        return batch

    @staticmethod
    def withdraw(batch: SpoolBatch, items: list[StoredEvent]) -> int:
        """Take back a call's events (the writer not having `batch` in hand), so that
        they are never written; the bytes taken back that were not written already."""
        mine = {id(item) for item in items}
        batch.items = [item for item in batch.items if id(item) not in mine]
        return sum(len(item.body) for item in items if id(item) not in batch.written_ids)

    def take(self) -> list[SpoolBatch]:
        """The batches with events to write, marked as in the writer's hand."""
        batches = [b for b in self._batches if b.items]
        for batch in batches:
            batch.state = "writing"
        for empty in [b for b in self._batches if not b.items and b.state != "open"]:
            self._batches.remove(empty)
        return batches

    def committed(self, batch: SpoolBatch, count: int) -> list[StoredEvent]:
        """The first `count` events of `batch` are written: those events. A batch
        written whole is done with."""
        committed, batch.items = batch.items[:count], batch.items[count:]
        batch.written_ids.update(id(item) for item in committed)
        if not batch.items:
            batch.state = "written"
            if batch in self._batches:
                self._batches.remove(batch)
        return committed

    def requeue(self) -> None:
        """The batches the writer had in hand go back (a write failed)."""
        for batch in self._batches:
            if batch.state == "writing":
                batch.state = "queued"

    def close_open(self) -> list[SpoolBatch]:
        """The batches with events, none left open (for a flush to wait for)."""
        targets = [b for b in self._batches if b.items]
        for batch in targets:
            if batch.state == "open":
                batch.state = "queued"
        return targets

    def has_events(self) -> bool:
        return any(b.items for b in self._batches)

    def events(self) -> int:
        return sum(len(b.items) for b in self._batches)

    def __bool__(self) -> bool:
        return bool(self._batches)
