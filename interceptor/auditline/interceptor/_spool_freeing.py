"""Freeing exported events: what every exporter has passed stops counting as pending,
and is deleted once out of the retention window, or earlier when the spool's cap
needs the room (`trim_retained`); the Merkle tree's nodes before it are pruned.

`SpoolStore`'s base class, apart because it is the one place that deletes events:
nothing an exporter has yet to export may go, whatever retention or the cap say.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import ClassVar

from auditline.interceptor._spool_queries import EventQueries
from auditline.interceptor._spool_tree import TreeLog

__all__ = ["SpoolFreeing"]

_CLOCK_SKEW_NS = 600 * 10**9  # ten minutes
_TRIMMED_HELD_MOST = 200_000


class SpoolFreeing(abc.ABC):
    """The state below is the store's, set in its constructor; every method takes
    `lock`."""

    # Set in an audit worker started again, before its pipeline is made: the spool it
    # opens deletes none of its events until the worker says (`hold`); some were
    # committed by the worker that died, and kept for its unanswered batches.
    hold_at_open: ClassVar[bool] = False
    keep_after: int | None  # no event numbered after it is deleted (None: no hold)
    # The ids (and numbers) of held events the cap deleted all the same, while the hold
    # lasts: a worker started again still recognises them when they are resent.
    trimmed_held: dict[str, int]
    lock: threading.RLock
    retain_seconds: float
    freed_upto: int
    next_seq: int
    pending_bytes: int
    queries: EventQueries
    retained_bytes: int
    tree: TreeLog
    _db: sqlite3.Connection
    _on_freed: Callable[[], None]

    @abc.abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        """One write transaction (the caller holds the lock)."""

    @abc.abstractmethod
    def _size_between(self, after: int | None, upto: int | None) -> int:
        """The bytes of the events numbered in (`after`, `upto`]."""

    def free(self) -> None:
        """Free the events every exporter has passed; wake callers waiting for room."""
        with self.lock:
            with self._transaction():
                freed = self._pass_exported()
            self._account_freed(freed)

    def _pass_exported(self) -> tuple[int, int]:
        """Mark the events every exporter has passed as exported (no longer pending) and
        delete those past the retention window; return (bytes passed, bytes deleted).
        The caller holds the lock, in a transaction."""
        row = self._db.execute("SELECT MIN(seq), COUNT(*) FROM watermarks").fetchone()
        if not row[1] or row[0] <= self.freed_upto:
            return 0, 0  # no exporter yet, or none moved: keep everything
        passed_from, passed_upto = self.freed_upto, int(row[0])
        passed = self._size_between(passed_from, passed_upto)
        self._db.execute("INSERT OR REPLACE INTO freed VALUES (1, ?)", (passed_upto,))
        self.freed_upto = passed_upto
        deleted = self._delete_passed(passed_from=passed_from, passed=passed)
        self._prune_tree()
        return passed, deleted

    def _delete_passed(self, *, passed_from: int, passed: int) -> int:
        """Delete what every exporter has passed (up to `freed_upto`, `passed` bytes of
        it after `passed_from`) that retention and the hold let go; its bytes."""
        upto = self.freed_upto
        if self.retain_seconds > 0:
            upto = self._out_of_window(time.time_ns() - int(self.retain_seconds * 1e9))
        if self.keep_after is not None:
            upto = min(upto, self.keep_after)
        size = None
        if upto == self.freed_upto:
            # All of it goes: its bytes are those kept before and those just passed
            # (summing the passed rows again cost 5% of the exporter's time).
            size = self._size_between(None, passed_from) + passed
        return self._delete_upto(upto, size=size)

    def hold(self, after: int | None) -> None:
        """Delete no event numbered after `after` until told otherwise (None: no hold),
        whatever retention says; the cap still does (`trim_retained`). An audit
        worker holds the events of the batches it has not acknowledged: a worker
        started again recognises them by their ids when they are resent, which a
        deleted event no longer has, and would write them twice. What a lifted hold
        kept back, exported already, goes now (else only at the next export); the ids
        of what the cap deleted while held are forgotten once no longer held."""
        with self.lock:
            before, self.keep_after = self.keep_after, after
            if self.trimmed_held and after != before:
                if after is None:
                    self.trimmed_held = {}
                elif before is None or after > before:  # (held back further: all stay)
                    self.trimmed_held = {
                        event_id: seq for event_id, seq in self.trimmed_held.items() if seq > after
                    }
            # Only when it kept back some of what was passed, and now keeps less.
            if before is None or before >= self.freed_upto:
                return
            if after is not None and after <= before:
                return
            with self._transaction():
                deleted = self._delete_passed(passed_from=self.freed_upto, passed=0)
                if deleted:
                    self._prune_tree()
            self.retained_bytes -= deleted

    def seq_kept(self, event_id: str) -> int | None:
        """The number of an event by its id, while the spool keeps it or a hold
        remembers it (`hold`): what a worker started again looks resent events up by."""
        with self.lock:
            seq = self.queries.seq_of(event_id)
            return self.trimmed_held.get(event_id) if seq is None else seq

    def _remember_trimmed(self, upto: int) -> None:
        """Held events go too when the cap needs the room (it bounds the disk; a hold
        does not), but their ids are remembered while it lasts: the newest
        `_TRIMMED_HELD_MOST` (~200 bytes each: 40 MB at most), as resent events are
        the newest (at most the serving process's `max_held`, 50,000 by default).
        More would be older events deleted while a worker started again held
        everything."""
        newest = self._db.execute(
            "SELECT event_id, seq FROM events"
            " WHERE seq > ? AND seq <= ? AND event_id != '' ORDER BY seq DESC LIMIT ?",
            (self.keep_after, upto, _TRIMMED_HELD_MOST),
        ).fetchall()
        self.trimmed_held.update(reversed(newest))
        excess = max(len(self.trimmed_held) - _TRIMMED_HELD_MOST, 0)
        for event_id in list(itertools.islice(self.trimmed_held, excess)):
            del self.trimmed_held[event_id]

    def _out_of_window(self, oldest_ns: int) -> int:
        """The last of the exported events that leave the retention window now: the
        oldest ones, in the order they were numbered, up to the first one that is still
        in it. (An event that began before one numbered ahead of it, a long call's,
        stays until that one goes too.) Only the rows that go are read: a condition on
        the time alone would read every retained event at each file's commit, and the
        exporter's rate would fall as the window fills (to 12,000 events/s with
        300,000 events retained)."""
        # An event dated ahead of now by more than a clock's usual correction (one
        # recorded while the clock was wrong, then stepped back) holds nothing back:
        # else every later event would stay until its date, however far.
        latest_ns = time.time_ns() + _CLOCK_SKEW_NS
        row = self._db.execute(
            "SELECT seq FROM events WHERE seq <= ? AND at_ns >= ? AND at_ns <= ? "
            "ORDER BY seq LIMIT 1",
            (self.freed_upto, oldest_ns, latest_ns),
        ).fetchone()
        return self.freed_upto if row is None else int(row[0]) - 1

    def _prune_tree(self) -> None:
        """Forget the tree's nodes before every exporter's watermark, but for what a new
        exporter (which starts at the oldest event still kept) needs."""
        oldest = self._db.execute("SELECT MIN(seq) FROM events").fetchone()[0]
        keep_from = self.next_seq if oldest is None else int(oldest)
        self.tree.prune(max(min(self.freed_upto, keep_from - 1), self.tree.base))

    def _delete_upto(self, upto: int, *, size: int | None = None) -> int:
        """Delete the exported events numbered up to `upto`; return their bytes
        (`size`, when the caller has counted them)."""
        upto = min(upto, self.freed_upto)
        if size is None:
            size = self._size_between(None, upto)
        if size:
            self._db.execute("DELETE FROM events WHERE seq <= ?", (upto,))
        return size

    def _account_freed(self, freed: tuple[int, int]) -> None:
        passed, deleted = freed
        self.pending_bytes -= passed
        self.retained_bytes += passed - deleted
        if passed:
            self._on_freed()

    def trim_retained(self, cap: int) -> int:
        """Delete the oldest exported events until pending and retained bytes fit in
        `cap` (retention gives way before admission does, and holds too: see
        `trimmed_held`); return the bytes deleted."""
        with self.lock:
            excess = self.pending_bytes + self.retained_bytes - cap
            if excess <= 0 or not self.retained_bytes:
                return 0
            # The oldest first, in key order, until they make up the excess: only the
            # rows that go are read. (A running sum in SQL read and sorted every
            # retained row, at every writer round of a spool kept at its cap: 104 ms
            # a round with 100,000 events retained.)
            upto, total = self.freed_upto, 0
            rows = self._db.execute(
                "SELECT seq, size FROM events WHERE seq <= ? ORDER BY seq", (self.freed_upto,)
            )
            for seq, size in rows:
                total += size
                if total >= excess:
                    upto = int(seq)
                    break
            rows.close()
            if self.keep_after is not None and upto > self.keep_after:
                self._remember_trimmed(upto)
            with self._transaction():
                deleted = self._delete_upto(upto)
                self._prune_tree()
            self.retained_bytes -= deleted
            return deleted
