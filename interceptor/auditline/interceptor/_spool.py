"""The durable spool: a `Sink` keeping finished events on local disk until every exporter
has them.

SQLite in WAL mode (`SpoolStore`). Events arrive redacted, as JSON documents; one
writer thread (`_spool_writer`) group-commits them, numbering them gap-free per node.

Durability:
- `async` (default): a call returns before its event is on disk; events not yet
  committed are lost if the process dies (the README gives the measured window);
  a clean shutdown loses nothing.
- `sync` (fail-closed): `emit_documents(wait=True)` returns only once the call's
  events are committed with `synchronous=FULL`, or raises having stored none of
  them (on an event loop, `await keep_documents(...)`; see `_spool_queue`). `admit`
  refuses calls before they run when their events could not be kept.

When a write fails (a full disk, SQLite's `SQLITE_FULL`) nothing is discarded:
the store's reserve is released so the events of calls already running can be
written, the spool turns **degraded** (`sync` then refuses new calls), the
unwritten events wait in memory (at most `max_memory_bytes`) and are retried,
and the spool recovers by itself once the reserve can be held again. Events
beyond the memory bound are dropped and counted, and an `AuditEventsDropped`
marker (DATA_LOSS) with the exact count is written as soon as the spool can write.

Backpressure when pending and retained events reach `max_bytes` (retained ones
are deleted first): `block` (wait up to `block_timeout`, then refuse), `reject`
(refuse at once) or `drop` (events are dropped and counted, `async` only).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from auditline.audit.v1 import event_pb2
from auditline.interceptor._formats import event_document
from auditline.interceptor._log_gates import LogGates
from auditline.interceptor._losses import LossCounter
from auditline.interceptor._spool_disk import SpoolDisk
from auditline.interceptor._spool_queue import (
    AsyncCaller,
    SpoolBatch,
    SpoolQueue,
    answer,
    answer_late,
    item_ids,
    too_late,
)
from auditline.interceptor._spool_records import (
    QueuedDocuments,
    SpoolStats,
    StoredEvent,
    stored_event,
)
from auditline.interceptor._spool_store import SpoolStore
from auditline.interceptor._spool_writer import SpoolWriter
from auditline.interceptor._types import AuditUnavailableError, EventDocument, Refused

__all__ = ["Spool"]

log = logging.getLogger("auditline.interceptor")

DURABILITY = ("async", "sync")
BACKPRESSURE = ("block", "reject", "drop")
_FULL = "the audit log is full"


class Spool(SpoolWriter):
    """A `Sink` that keeps events durable on disk for the exporters."""

    retry_interval = 0.2  # between attempts while writes fail

    def __init__(
        self,
        path: Path,
        *,
        node_id: str = "",
        max_bytes: int = 1 << 30,
        durability: str = "async",
        backpressure: str = "block",
        commit_interval: float = 0.01,
        block_timeout: float = 10.0,
        retain_seconds: float = 0.0,
        reserve_bytes: int | None = None,
        max_memory_bytes: int = 64 << 20,
        max_file_bytes: int | None = None,
    ) -> None:
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {DURABILITY}")
        if backpressure not in BACKPRESSURE:
            raise ValueError(f"backpressure must be one of {BACKPRESSURE}")
        if durability == "sync" and backpressure == "drop":
            raise ValueError("sync durability never drops events: use block or reject")
        self.node_id = node_id
        self.max_bytes = max_bytes
        self._hard_cap = max_bytes + max_bytes // 10
        self.durability = durability
        self.backpressure = backpressure
        self.commit_interval = commit_interval
        self.block_timeout = block_timeout
        self.max_memory_bytes = max_memory_bytes
        mutex = threading.RLock()
        self._lock = threading.Condition(mutex)  # room in the spool (admit waits on it)
        self._work = threading.Condition(mutex)  # events to write (the writer waits)
        self._written = threading.Condition(mutex)  # batches written (sync callers wait)
        self._new_events = threading.Condition()
        if reserve_bytes is None:
            reserve_bytes = max(1 << 20, min(64 << 20, max_bytes // 16))
        self.store = SpoolStore(
            path,
            durability=durability,
            reserve_bytes=reserve_bytes,
            max_file_bytes=max_file_bytes,
            retain_seconds=retain_seconds,
            on_freed=self._on_freed,
        )
        self.stats = SpoolStats()
        self._refresh_sizes()
        self._queue = SpoolQueue()  # events taken, not yet written
        self._losses = LossCounter(self.store.saved_losses())
        self._force_marker = False
        self._flush_asked = False  # a flush waits: the writer goes at once
        # Told the reason whenever the spool turns degraded, and "" when it recovers
        # (from the writer thread): health checks follow it.
        self.on_degraded: Callable[[str], None] = lambda reason: None
        # Called after each round of writes, committed or failed (from the writer
        # thread): an audit worker waiting to acknowledge queued events follows it.
        self.on_written: Callable[[], None] = lambda: None
        self._disk = SpoolDisk(self.store, self.stats, lambda reason: self.on_degraded(reason))
        self._gates = LogGates()
        self._closed = False
        self._start_writer()

    @property
    def degraded(self) -> str:
        """Why the spool cannot promise to keep events right now; empty when it can."""
        return self._disk.reason

    # --- the request path ------------------------------------------------------------

    def admit(self) -> None:
        """Called before a call runs: refuse it when its event could not be kept (with
        `block` backpressure, once the spool stayed full for `block_timeout`)."""
        reason = self.refusal()
        if not reason:
            return
        if reason == _FULL and self.backpressure == "block":
            with self._lock:
                if self._lock.wait_for(lambda: not self.refusal(), self.block_timeout):
                    return
            reason = f"the audit log stayed full for {self.block_timeout:g}s"
        if not self._closed:
            self.stats.rejected += 1
        raise AuditUnavailableError(reason)

    def refusal(self) -> str:
        """Why `admit` would refuse a call now, without waiting for room ("" when it
        would not): what an audit worker reports to the serving process, which then
        refuses at once rather than wait."""
        if self._closed:
            return "the audit log is closed"
        if self.durability == "sync" and self._disk.reason:
            return "the audit log cannot record calls right now"
        if self.backpressure != "drop" and self._full() >= self.max_bytes:
            return _FULL
        return ""

    def _full(self) -> int:
        """Bytes that count against `max_bytes`: written events some exporter needs.
        (Events in memory have their own bound, `max_memory_bytes`.)"""
        return self.stats.bytes

    def emit(self, event: event_pb2.ApiEvent) -> None:
        """Take an event message (in sync durability, return once it is committed)."""
        self.emit_documents([event_document(event)])

    def emit_documents(
        self, documents: Sequence[EventDocument], *, wait: bool | None = None
    ) -> None:
        """Take the events of one call, to be committed together.

        `wait` (the default in sync durability): return once they are committed, or
        raise `AuditUnavailableError` having stored none of them. Without it, events
        that cannot be kept are dropped and counted, never raised about.
        """
        wait = self.durability == "sync" if wait is None else wait
        items = self._stored(documents)
        if not items:
            return  # logs that were switched off when the call came (not a loss)
        with self._lock:
            batch = self._enqueue(items, wait=wait)
            if batch is not None and wait:
                self._work.notify()
                self._await(batch, items)

    def queue_documents(self, documents: Sequence[EventDocument]) -> QueuedDocuments:
        """`emit_documents(documents, wait=False)`: how many were queued, and a test of
        whether they are committed (true at once when they were dropped and counted,
        or left out)."""
        items = self._stored(documents)
        with self._lock:
            batch = self._enqueue(items, wait=False) if items else None
        if batch is None:
            return QueuedDocuments(events=0, committed=lambda: True)
        ids = item_ids(items)

        def committed() -> bool:
            with self._lock:
                return batch.holds_written(ids)

        return QueuedDocuments(events=len(items), committed=committed)

    async def keep_documents(
        self, documents: Sequence[EventDocument], *, refused_later: Refused | None = None
    ) -> None:
        """`emit_documents(documents, wait=True)` for a caller on an asyncio event loop:
        the loop awaits the commit rather than a thread blocking for it. A caller
        cancelled meanwhile is gone; if its events are then withdrawn (not committed
        within `block_timeout`), `refused_later` is told why, on the caller's loop."""
        items = self._stored(documents)
        if not items:
            return
        with self._lock:
            batch = self._enqueue(items, wait=True)
            assert batch is not None
            self._work.notify()
            caller = self._queue.async_callers.add(
                batch, items, timeout=self.block_timeout, refused_later=refused_later
            )
        # The writer refuses it at its deadline; this timer, when the writer is busy.
        timer = caller.loop.call_later(self.block_timeout, self._expire, caller)
        try:
            await caller.future
        except asyncio.CancelledError:
            future = caller.future
            if future.done() and not future.cancelled():  # answered as it was cancelled
                refusal = future.exception()
                if isinstance(refusal, Exception) and refused_later is not None:
                    answer_late(refused_later, refusal)
            raise
        finally:
            if not caller.future.cancelled():
                timer.cancel()  # answered (a cancelled caller's events still expire)

    def _expire(self, caller: AsyncCaller) -> None:
        with self._lock:
            expired = self._queue.async_callers.expire(caller, self._withdraw)
        if expired:
            answer([(caller, too_late())])

    def _stored(self, documents: Sequence[EventDocument]) -> list[StoredEvent]:
        """The documents as the spool stores them, less those of logs switched off."""
        return [stored_event(self.node_id, d) for d in documents if self._gates.wanted(d)]

    def _enqueue(self, items: list[StoredEvent], *, wait: bool) -> SpoolBatch | None:
        """Holding the lock: queue one call's events in the open batch; the batch.
        Events that cannot be kept are refused (`wait`: raised) or dropped and counted."""
        size = sum(len(item.body) for item in items)
        refusal = self._refusal(size)
        if refusal:
            if wait:
                raise AuditUnavailableError(f"the audit log cannot record this call ({refusal})")
            self._drop(len(items), refusal, time.time_ns())
            return None
        batch = self._queue.add(items)
        self.stats.buffered_bytes += size
        self.stats.accepted += len(items)
        return batch

    def _refusal(self, size: int) -> str:
        """Why events of `size` bytes cannot be taken now ("" when they can)."""
        if self._closed:
            return "the spool is closed"
        # `block` and `reject` refuse calls before they run (`admit`); the events of
        # calls already admitted may use a tenth more.
        limit = self.max_bytes if self.backpressure == "drop" else self._hard_cap
        if self._full() >= limit:
            return "the spool was full"
        if self.stats.buffered_bytes + size > self.max_memory_bytes:
            return "the spool could not write and its memory bound was reached"
        return ""

    def _await(self, batch: SpoolBatch, items: list[StoredEvent]) -> None:
        """Wait (holding the lock) until `batch` is written; on timeout, withdraw `items`."""
        ids = item_ids(items)
        if self._written.wait_for(lambda: batch.holds_written(ids), self.block_timeout):
            return
        # Not written in time: take these events back so that they never are (the
        # caller is told UNAVAILABLE), unless the writer has them in hand right now.
        self._written.wait_for(lambda: batch.state != "writing")
        if batch.holds_written(ids):
            return
        self._withdraw(batch, items)
        raise too_late()

    def _withdraw(self, batch: SpoolBatch, items: list[StoredEvent]) -> None:
        """Holding the lock, the writer not having `batch` in hand: take back the
        events of a call that stopped waiting for them, so that they are never written."""
        self.stats.buffered_bytes -= self._queue.withdraw(batch, items)
        self.stats.accepted -= len(items)

    def count_lost(self, count: int, reason: str, at_ns: int, *, report: int = 0) -> None:
        """Count events lost before they reached the spool (an audit worker's serving
        process could not hand them over): they are in the next drop marker. `report`:
        the number of the report telling of them; one counted already is not again."""
        with self._lock:
            if self._drop(count, reason, at_ns, report=report):
                self._work.notify()

    @property
    def loss_reports_kept(self) -> int:
        """The number of the last loss report (`count_lost`) the spool file has counted."""
        with self._lock:
            return self._losses.reports_kept

    def _drop(self, count: int, reason: str, at_ns: int, *, report: int = 0) -> bool:
        """Count losses (`LossCounter.add`); whether they were."""
        if not self._losses.add(count, reason, at_ns, report=report):
            return False
        self.stats.dropped += count
        return True

    def keep_logs(self, log_types: frozenset[str] | None, since_ns: int | None = None) -> None:
        """From `since_ns` (now by default) keep only events of these logs (`LogType`
        names; None: all). The events of calls that came earlier are not affected,
        even when they reach the spool later."""
        with self._lock:
            self._gates.keep(log_types, since_ns)

    def _on_freed(self) -> None:
        with self._lock:
            self._refresh_sizes()
            self._lock.notify_all()

    # --- readers and lifecycle ---------------------------------------------------------

    def wait_for_events(self, after_seq: int, timeout: float) -> bool:
        """Wait until an event past `after_seq` is committed, or `timeout` passes."""
        with self._new_events:
            return self._new_events.wait_for(lambda: self.stats.last_seq > after_seq, timeout)

    def flush(self, timeout: float | None = 10.0, *, with_drop_marker: bool = False) -> bool:
        """Wait until everything taken so far is committed (and, when asked, the marker
        of events dropped so far, even if the spool is still full)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._force_marker = with_drop_marker
            targets = self._queue.close_open()
            self._flush_asked = bool(targets)
            self._work.notify()

            def done() -> bool:
                if any(b.state != "written" and b.items for b in targets):
                    return False
                return not with_drop_marker or self._losses.pending() is None

            remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
            ok = self._written.wait_for(done, remaining)
            self._force_marker = False
            return ok

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._work.notify()
        self._writer.join(30 + self.block_timeout)
        self.store.close()
