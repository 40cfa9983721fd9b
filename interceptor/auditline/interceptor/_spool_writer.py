"""The spool's writer thread: it waits for events to commit, writes them in batches (a
drop marker first when events were lost), answers the callers waiting for them, and
retries while the disk is full. `Spool` takes the events and says when to stop."""

from __future__ import annotations

import abc
import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from auditline.interceptor._losses import LossCounter, Losses
from auditline.interceptor._spool_disk import SpoolDisk
from auditline.interceptor._spool_queue import SpoolBatch, SpoolQueue
from auditline.interceptor._spool_records import SpoolStats, StoredEvent, stored_event
from auditline.interceptor._spool_store import SpoolStore
from auditline.interceptor._types import AuditUnavailableError

__all__ = ["SpoolWriter"]

log = logging.getLogger("auditline.interceptor")


class SpoolWriter(abc.ABC):
    """`Spool`'s writing half (its base class): the state below is the spool's, set in
    its constructor, and guarded by its lock (`_lock`, `_work` and `_written` share
    one mutex)."""

    node_id: str
    max_bytes: int
    durability: str
    commit_interval: float
    block_timeout: float
    retry_interval: float
    store: SpoolStore
    stats: SpoolStats
    _lock: threading.Condition
    _work: threading.Condition
    _written: threading.Condition
    _new_events: threading.Condition
    _queue: SpoolQueue
    _losses: LossCounter
    _disk: SpoolDisk
    _closed: bool
    _force_marker: bool
    _flush_asked: bool
    on_written: Callable[[], None]

    @abc.abstractmethod
    def _full(self) -> int:
        """Bytes that count against `max_bytes`."""

    @abc.abstractmethod
    def _withdraw(self, batch: SpoolBatch, items: list[StoredEvent]) -> None:
        """Take back the events of a caller that stopped waiting for them."""

    def _start_writer(self) -> None:
        """Start the writer thread (at the end of the spool's constructor)."""
        self._close_deadline: float | None = None
        self._losses_saved = self._losses.version  # the losses as the file has them
        self._writer = threading.Thread(target=self._run, name="auditline-spool", daemon=True)
        self._writer.start()

    def _run(self) -> None:
        try:
            while True:
                try:
                    if not self._write_round():
                        return
                except Exception:  # a bug: the writer must outlive it, and say so
                    log.exception("the audit spool's writer failed; retrying")
                    self._requeue()
                    time.sleep(self.retry_interval)
        finally:
            with self._lock:
                self._queue.async_callers.fail_all(AuditUnavailableError("the audit log is closed"))

    def _write_round(self) -> bool:
        """Wait for work, write what is queued; False once closed and done."""
        with self._work:
            self._work.wait_for(
                lambda: (
                    self._closed
                    or self._flush_asked
                    or self._marker_forced()
                    or self._has_sync_work()
                ),
                self.retry_interval if self._disk.reason else self.commit_interval,
            )
            self._flush_asked = False  # what it waits for is taken now
            if self._queue.async_callers:
                self._queue.async_callers.settle(self._withdraw)  # those past their deadline
            closing = self._closed
            batches = self._queue.take()
            losses = self._losses.pending() if self._marker_due(closing) else None
        try:
            ok = self._write(batches, losses)
        finally:
            self.on_written()
        self._save_losses()
        if ok and self._disk.reason and self._queue.empty():
            self._disk.recover(self.retry_interval)
        if closing:
            if ok and self._queue.empty() and self._losses.pending() is None:
                return False
            if not ok and self._give_up():
                return False
        if not ok:
            time.sleep(self.retry_interval)
        return True

    def _save_losses(self) -> None:
        """Keep the count of losses not yet in a marker in the spool file, when it
        changed: a `kill -9` before the marker is written must not erase it."""
        with self._lock:
            version = self._losses.version
            if version == self._losses_saved:
                return
            pending = self._losses.pending()
        try:
            self.store.save_losses(pending)
        except sqlite3.Error as exc:  # a full disk: tried again next round
            log.warning("could not save the count of dropped audit events: %s", exc)
            return
        self._losses_saved = version
        if pending is not None:
            with self._lock:
                self._losses.kept(pending)

    def _has_sync_work(self) -> bool:
        return self.durability == "sync" and self._queue.has_events()

    def _marker_forced(self) -> bool:
        return self._force_marker and self._losses.pending() is not None

    def _marker_due(self, closing: bool) -> bool:
        """A drop marker is written once the spool is below its cap again (one per
        episode of a full spool), at shutdown, or when asked to (`flush`)."""
        if self._losses.pending() is None:
            return False
        return closing or self._force_marker or self._full() < self.max_bytes

    def _write(self, batches: list[SpoolBatch], marker: Losses | None) -> bool:
        """Write the batches in order (a drop marker first); False if a write failed."""
        pending = list(batches)
        if marker is not None and not pending:
            pending = [SpoolBatch()]
        for batch in pending:
            # Marked as in hand only now: until the writer reaches a batch, its
            # callers may still withdraw their events from it at their deadline.
            with self._lock:
                if not batch.items and marker is None:
                    continue  # emptied meanwhile: every caller withdrew
                batch.state = "writing"
                calls = batch.calls()
            if marker is not None:
                calls = [[stored_event(self.node_id, marker.marker())], *calls]
            try:
                count = self._disk.insert_what_fits(calls, settles=marker)
            except sqlite3.Error as exc:
                self._requeue()
                self._disk.failed(exc)
                return False
            with self._lock:
                if marker is not None:
                    self._losses.settle(marker)
                    marker = None
                    count -= 1
                committed = self._queue.committed(batch, count)
                self.stats.buffered_bytes -= sum(len(item.body) for item in committed)
                self._refresh_sizes()
                self._written.notify_all()
                if self._queue.async_callers:
                    self._queue.async_callers.settle(self._withdraw)
            if batch.items:  # the rest did not fit: the disk is full
                self._requeue()
                self._disk.failed(None)
                return False
        with self._new_events:
            self._new_events.notify_all()
        if self.store.pending_bytes + self.store.retained_bytes > self.max_bytes:
            try:
                self.store.trim_retained(self.max_bytes)
            except sqlite3.Error as exc:  # retained events stay; pending ones are safe
                log.warning("could not trim retained audit events: %s", exc)
            self._refresh_sizes()
        return True

    def _requeue(self) -> None:
        """Batches the writer had in hand go back to the queue (a write failed)."""
        with self._lock:
            self._queue.requeue()
            self._written.notify_all()

    def _give_up(self) -> bool:
        """At shutdown, when writes keep failing for `block_timeout`: say what is lost."""
        now = time.monotonic()
        if self._close_deadline is None:
            self._close_deadline = now + self.block_timeout
        if now < self._close_deadline:
            return False
        with self._lock:
            left = self._queue.events()
            losses = self._losses.pending()
        lost = left + (losses.count if losses else 0)
        log.error("audit spool closing with %d events it could not write: they are lost", lost)
        return True

    def _refresh_sizes(self) -> None:
        self.stats.bytes = self.store.pending_bytes
        self.stats.retained_bytes = self.store.retained_bytes
        self.stats.last_seq = self.store.last_seq
