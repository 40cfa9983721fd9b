"""The spool's SQLite file: events, exporter bookkeeping, retention, and the disk reserve.

One connection (stdlib `sqlite3`, WAL) shared by the spool's writer, the exporters
and the queries, one at a time under `lock`. The writer's side is `insert`; the
exporters' side is `read`, and their bookkeeping (`intent`, `begin_batch`,
`commit_files`, where their logs are: the base class `SpoolExporters`,
`_spool_exporters`) and `free` (freeing and retention: its base `SpoolFreeing`); the
node's event queries are `queries` (`_spool_queries`); the count of losses not yet
in a marker, `save_losses` (`_spool_losses`).

Sizes. `pending_bytes` are events some exporter still needs; `retained_bytes`
are exported events kept for queries. Both count against the spool's cap, and
retained events give way first (`trim_retained`). Beneath that logical cap the
file itself may hit a full disk (or `max_file_bytes`, SQLite's `max_page_count`,
which behaves the same: `SQLITE_FULL`). For that moment the store holds a
**reserve**: a preallocated file beside the database, and as much headroom under
the page limit. `release_reserve` gives both back so that the events of calls
already running can still be written; `restore_reserve` takes them again once
there is room.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from auditline.interceptor._losses import Losses
from auditline.interceptor._merkle import Frontier
from auditline.interceptor._reserve import DiskReserve
from auditline.interceptor._spool_exporters import SpoolExporters, StaleBatchError
from auditline.interceptor._spool_lock import SpoolLock
from auditline.interceptor._spool_losses import StoredLosses
from auditline.interceptor._spool_queries import EventQueries
from auditline.interceptor._spool_records import (
    SpooledEvent,
    StoredEvent,
)
from auditline.interceptor._spool_schema import create_schema
from auditline.interceptor._spool_tree import TreeLog, leaves_of

__all__ = ["SpoolStore", "StaleBatchError"]


SQLITE_FULL = 13


_EVENT_COLUMNS = "seq, at_ns, end_ns, log_type, body"


class SpoolStore(SpoolExporters):
    """The spool's database. Every method takes `lock`; callers may hold it too."""

    def __init__(
        self,
        path: Path,
        *,
        durability: str,
        reserve_bytes: int,
        max_file_bytes: int | None = None,
        retain_seconds: float = 0.0,
        on_freed: Callable[[], None] = lambda: None,
        lock_timeout: float = 60.0,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._writer_lock = SpoolLock(path.with_name(path.name + ".lock"), timeout=lock_timeout)
        self.lock = threading.RLock()
        self.retain_seconds = retain_seconds
        self._on_freed = on_freed
        self._reserve = DiskReserve(path.with_name(path.name + ".reserve"), reserve_bytes)
        self._synced = durability == "sync"  # every commit synced (`synchronous=FULL`)
        self._db = self._connect(durability)
        self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        self._reserve_pages = -(-reserve_bytes // self._page_size)
        self._max_pages = max_file_bytes // self._page_size if max_file_bytes else None
        self.reserve_held = False
        self.restore_reserve()
        freed = self._db.execute("SELECT seq FROM freed").fetchone()
        self.freed_upto = int(freed[0]) if freed else 0
        # Freed events leave the table, and events an exporter leaves out are in no
        # file: the numbering must still never go back, or a number exported (or
        # passed) and proven in a checkpoint would name another event.
        (numbered,) = self._db.execute(
            "SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM events),"
            " (SELECT COALESCE(MAX(last_seq), 0) FROM files),"
            " (SELECT COALESCE(MAX(seq), 0) FROM watermarks),"
            " (SELECT COALESCE(MAX(last_seq), 0) FROM intents))"
        ).fetchone()
        self.tree = TreeLog(self._db, max(int(numbered), self.freed_upto) + 1, self.freed_upto)
        self.next_seq = max(int(numbered), self.freed_upto, self.tree.base + self.tree.size) + 1
        self.keep_after = 0 if self.hold_at_open else None  # 0: none is deleted
        self.trimmed_held = {}
        self.queries = EventQueries(db=self._db, lock=self.lock)
        self._losses = StoredLosses(self._db)
        self.pending_bytes = self._size_between(self.freed_upto, None)
        self.retained_bytes = self._size_between(None, self.freed_upto)

    def _connect(self, durability: str) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # Incremental: freed pages can be handed back to the disk (a new file only;
        # an older spool keeps its free pages for reuse).
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed batch survives a power loss, not only a crash.
        db.execute(
            "PRAGMA synchronous=FULL" if durability == "sync" else "PRAGMA synchronous=NORMAL"
        )
        db.execute("PRAGMA busy_timeout=10000")
        # Some builds (Debian's) overwrite every deleted row with zeros, so that freeing
        # an exported batch writes all its pages again: a quarter of the exporter's
        # time. FAST zeroes them only where that costs no extra write. What is freed
        # was exported already, and the spool holds no secrets.
        db.execute("PRAGMA secure_delete=FAST")
        create_schema(db)
        self.path.chmod(0o600)
        return db

    def _size_between(self, after: int | None, upto: int | None) -> int:
        where, args = [], []
        if after is not None:
            where.append("seq > ?")
            args.append(after)
        if upto is not None:
            where.append("seq <= ?")
            args.append(upto)
        sql = "SELECT COALESCE(SUM(size), 0) FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return int(self._db.execute(sql, args).fetchone()[0])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (the caller holds the lock); rolled back on any error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self.lock:
            self._db.close()
        self._reserve.release()
        self._writer_lock.release()

    # --- the disk reserve ----------------------------------------------------------

    def release_reserve(self) -> None:
        """Give the reserve back: the disk (or the page limit) is full."""
        with self.lock:
            self._reserve.release()
            if self._max_pages is not None:
                self._db.execute(f"PRAGMA max_page_count={self._max_pages}")
            self.reserve_held = False

    def restore_reserve(self) -> bool:
        """Hold the reserve again if there is room for it now; True when it is held."""
        with self.lock:
            if self._max_pages is not None:
                limit = self._max_pages - self._reserve_pages
                pages, free = self._pages()
                if pages - free > limit - self._reserve_pages:
                    return False  # room for the reserve, and as much again
                if free:
                    with contextlib.suppress(sqlite3.Error):  # shrink the file first
                        self._db.executescript("PRAGMA incremental_vacuum;")
                # SQLite keeps the limit at least the file's size; free pages inside
                # the file then make up the headroom.
                self._db.execute(f"PRAGMA max_page_count={limit}")
            self.reserve_held = self._reserve.hold()
            return self.reserve_held

    def _pages(self) -> tuple[int, int]:
        pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
        free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
        return pages, free

    # --- the writer's side -----------------------------------------------------------

    def insert(self, items: Sequence[StoredEvent], *, settles: Losses | None = None) -> int:
        """Write events in one transaction, numbered from `next_seq`; return their bytes.
        `settles`: they include the drop marker of these losses, which are forgotten
        in the same transaction.

        Raises `sqlite3.Error` (nothing written) when the disk or the file is full.
        """
        with self.lock:
            seq = self.next_seq
            rows = []
            size = 0
            for item in items:
                body = item.numbered(seq)
                rows.append(
                    (
                        seq,
                        item.at_ns,
                        item.end_ns,
                        item.log_type,
                        len(body),
                        item.event_id,
                        item.event_name,
                        item.account,
                        item.code,
                        body,
                    )
                )
                size += len(body)
                seq += 1
            leaves = leaves_of([row[-1] for row in rows])
            try:
                with self._transaction():
                    self._db.executemany(
                        "INSERT INTO events (seq, at_ns, end_ns, log_type, size, event_id, "
                        "event_name, account, code, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    self.tree.append(leaves)
                    if settles is not None:
                        self._losses.settle(settles)
            except sqlite3.Error:
                self.tree.rollback()
                raise
            self.next_seq = seq
            self.pending_bytes += size
            return size

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    def saved_losses(self) -> Losses | None:
        """The losses a marker has yet to tell of, as last saved (`save_losses`)."""
        with self.lock:
            return self._losses.load()

    def save_losses(self, losses: Losses | None) -> None:
        """Keep the losses not yet in a marker (None: there are none), with the number
        of the last report they count, in one transaction."""
        with self.lock, self._transaction():
            self._losses.save(losses)

    # --- the exporters' side -----------------------------------------------------------

    def read(self, after_seq: int, limit: int = 1000) -> list[SpooledEvent]:
        with self.lock:
            rows = self._db.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
                (after_seq, limit),
            ).fetchall()
        return [SpooledEvent(*row) for row in rows]

    def iterate(self, after_seq: int, batch: int = 1000) -> Iterator[SpooledEvent]:
        while True:
            events = self.read(after_seq, batch)
            if not events:
                return
            yield from events
            after_seq = events[-1].seq

    def leaves(self, first_seq: int, last_seq: int) -> list[bytes]:
        """The Merkle leaf hashes of events `first_seq`..`last_seq`."""
        with self.lock:
            return self.tree.leaves(first_seq, last_seq)

    def frontier_at(self, seq: int) -> Frontier:
        """The node's tree as it stood once event `seq` was in it."""
        with self.lock:
            return self.tree.frontier_at(seq)
