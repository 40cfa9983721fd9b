"""`SpoolQueue`: the events a spool has taken and not yet written, in batches committed
together, and the fail-closed callers waiting for theirs.

A thread waits on the spool's condition (`Spool.emit_documents(wait=True)`). An asyncio
caller awaits a future (`Spool.keep_documents`) that the spool's writer resolves, with
one `call_soon_threadsafe` per event loop each time batches are written, so the loop
is not blocked and no executor thread is held per call. Events not committed within
the spool's `block_timeout` are withdrawn, so that they never are, unless the writer
has their batch in hand: the caller answers UNAVAILABLE. The writer checks the
deadlines between writes, and a timer on the caller's loop at its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable

from auditline.interceptor._spool_records import StoredEvent
from auditline.interceptor._types import AuditUnavailableError, Refused

__all__ = [
    "AsyncCaller",
    "AsyncCallers",
    "SpoolBatch",
    "SpoolQueue",
    "answer",
    "answer_late",
    "item_ids",
    "too_late",
]

log = logging.getLogger("auditline.interceptor")


def too_late() -> AuditUnavailableError:
    return AuditUnavailableError("the audit log could not record this call in time")


def item_ids(items: Iterable[StoredEvent]) -> set[int]:
    """How a call's events are told apart from others' in a batch."""
    return {id(item) for item in items}


class SpoolBatch:
    """Events committed together. `state`: open (taking events), queued, writing, written."""

    __slots__ = ("async_callers", "items", "starts", "state", "written_ids")

    def __init__(self) -> None:
        self.items: list[StoredEvent] = []  # those still to write
        # The first item of each call's events (`item_ids`): a call's events are
        # committed together or not at all, even when a full disk splits the batch.
        self.starts: set[int] = set()
        self.state = "open"
        # Items already committed while the rest waits (a full disk splits a batch).
        self.written_ids: set[int] = set()
        self.async_callers: list[AsyncCaller] = []  # waiting for their items of it

    def holds_written(self, ids: set[int]) -> bool:
        """Whether the items with these ids (`item_ids`) are committed."""
        return self.state == "written" or ids <= self.written_ids

    def calls(self) -> list[list[StoredEvent]]:
        """The items still to write, one list per call, in order."""
        calls: list[list[StoredEvent]] = []
        for item in self.items:
            if id(item) in self.starts or not calls:
                calls.append([])
            calls[-1].append(item)
        return calls


@dataclasses.dataclass(slots=True, kw_only=True, eq=False)
class AsyncCaller:
    """An asyncio caller waiting for its items of a batch to be committed."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    batch: SpoolBatch
    items: list[StoredEvent]
    ids: set[int]
    deadline: float  # time.monotonic(): withdrawn if not committed by then
    refused_later: Refused | None


# A caller and its answer: None when its items are committed, else why they are not.
Answer = tuple[AsyncCaller, Exception | None]


def answer(answers: list[Answer]) -> None:
    """On the callers' loop: resolve their futures. A caller cancelled meanwhile is
    told of a refusal through its `refused_later`."""
    for caller, error in answers:
        future = caller.future
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
        elif future.cancelled() and error is not None and caller.refused_later is not None:
            answer_late(caller.refused_later, error)


def answer_late(refused_later: Refused, error: Exception) -> None:
    """Tell a caller that stopped waiting why its events were refused."""
    try:
        refused_later(error)
    except Exception:  # a bug: the other callers are still answered
        log.exception("a cancelled audit call's refusal could not be handled")


def _post(answers: list[Answer]) -> None:
    """From the writer's thread: answer each caller on its own loop (one hand-off per
    loop, however many callers it has)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Answer]] = {}
    for caller, error in answers:
        by_loop.setdefault(caller.loop, []).append((caller, error))
    for loop, its_answers in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there
            loop.call_soon_threadsafe(answer, its_answers)


Withdraw = Callable[[SpoolBatch, list[StoredEvent]], None]


class AsyncCallers:
    """The asyncio callers waiting, by batch. Not thread-safe: the spool's lock
    guards it."""

    def __init__(self) -> None:
        self._batches: list[SpoolBatch] = []  # those with callers, oldest first

    def __bool__(self) -> bool:
        return bool(self._batches)

    def add(
        self,
        batch: SpoolBatch,
        items: list[StoredEvent],
        *,
        timeout: float,
        refused_later: Refused | None,
    ) -> AsyncCaller:
        """Wait for the caller's items of `batch` (on the running loop)."""
        loop = asyncio.get_running_loop()
        caller = AsyncCaller(
            loop=loop,
            future=loop.create_future(),
            batch=batch,
            items=items,
            ids=item_ids(items),
            deadline=time.monotonic() + timeout,
            refused_later=refused_later,
        )
        if not batch.async_callers:
            self._batches.append(batch)
        batch.async_callers.append(caller)
        return caller

    def settle(self, withdraw: Withdraw) -> None:
        """From the writer: answer the callers whose items are committed, and withdraw
        (and refuse) those past their deadline, unless their batch is being written."""
        now = time.monotonic()
        answers: list[Answer] = []
        for batch in list(self._batches):
            waiting = []
            for caller in batch.async_callers:
                if batch.holds_written(caller.ids):
                    answers.append((caller, None))
                elif now >= caller.deadline and batch.state != "writing":
                    withdraw(batch, caller.items)
                    answers.append((caller, too_late()))
                else:
                    waiting.append(caller)
            self._set(batch, waiting)
        _post(answers)

    def expire(self, caller: AsyncCaller, withdraw: Withdraw) -> bool:
        """At the caller's deadline, on its loop: withdraw its items unless they are
        committed or being written (the writer answers it then); whether it did. For
        when the writer is busy with another batch."""
        batch = caller.batch
        if caller not in batch.async_callers or batch.state == "writing":
            return False
        withdraw(batch, caller.items)
        self._set(batch, [c for c in batch.async_callers if c is not caller])
        return True

    def fail_all(self, error: Exception) -> None:
        """The writer stopped (a backstop: it answers every caller before it does)."""
        answers: list[Answer] = []
        for batch in self._batches:
            answers += [(caller, error) for caller in batch.async_callers]
            batch.async_callers = []
        self._batches = []
        _post(answers)

    def _set(self, batch: SpoolBatch, waiting: list[AsyncCaller]) -> None:
        batch.async_callers = waiting
        if not waiting:
            self._batches.remove(batch)


class SpoolQueue:
    """Not thread-safe: the spool's lock guards it."""

    def __init__(self) -> None:
        self._batches: collections.deque[SpoolBatch] = collections.deque()
        self.async_callers = AsyncCallers()

    def add(self, items: list[StoredEvent]) -> SpoolBatch:
        """Put one call's events in the open batch (a new one if none is); that batch."""
        batches = self._batches
        batch = batches[-1] if batches and batches[-1].state == "open" else None
        if batch is None:
            batch = SpoolBatch()
            batches.append(batch)
        batch.starts.add(id(items[0]))
        batch.items += items
        return batch

    @staticmethod
    def withdraw(batch: SpoolBatch, items: list[StoredEvent]) -> int:
        """Take back a call's events (the writer not having `batch` in hand), so that
        they are never written; the bytes taken back that were not written already."""
        ids = item_ids(items)
        batch.items = [item for item in batch.items if id(item) not in ids]
        batch.starts -= ids
        return sum(len(item.body) for item in items if id(item) not in batch.written_ids)

    def take(self) -> list[SpoolBatch]:
        """The batches with events to write, closed to new events (the writer marks
        each as in its hand when it reaches it)."""
        batches = self.close_open()
        # Emptied ones go, open or not (every call's events withdrawn from them).
        for empty in [b for b in self._batches if not b.items]:
            self._batches.remove(empty)
        return batches

    def committed(self, batch: SpoolBatch, count: int) -> list[StoredEvent]:
        """The first `count` events of `batch` are written: those events. A batch
        written whole is done with."""
        committed, batch.items = batch.items[:count], batch.items[count:]
        batch.written_ids.update(id(item) for item in committed)
        batch.starts.difference_update(id(item) for item in committed)
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

    def empty(self) -> bool:
        """No batch left, not even one emptied (the writer drops those)."""
        return not self._batches
