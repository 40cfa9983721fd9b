"""The spool's SQLite file: events, exporter bookkeeping, retention, and the disk reserve.

One connection (stdlib `sqlite3`, WAL) shared by the spool's writer, the exporters
and the queries, one at a time under `lock`. The writer's side is `insert`; the
exporters' side is `read`, `intent`, `begin_batch`, `commit_files` and `free`
(freeing and retention: the base class `SpoolFreeing`, `_spool_freeing`); the
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
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from auditline.interceptor._losses import Losses
from auditline.interceptor._merkle import Frontier
from auditline.interceptor._reserve import DiskReserve
from auditline.interceptor._spool_freeing import SpoolFreeing
from auditline.interceptor._spool_lock import SpoolLock
from auditline.interceptor._spool_losses import StoredLosses
from auditline.interceptor._spool_queries import EventQueries
from auditline.interceptor._spool_records import (
    BatchIntent,
    DestinationLog,
    ExportedFile,
    SpooledEvent,
    StoredEvent,
)
from auditline.interceptor._spool_schema import create_schema
from auditline.interceptor._spool_tree import TreeLog, leaves_of

__all__ = ["SpoolStore", "StaleBatchError"]


class StaleBatchError(RuntimeError):
    """A batch's commit found its exporter's watermark moved: another exporter of the
    same name (the one that replaced it) went on meanwhile."""


SQLITE_FULL = 13


_EVENT_COLUMNS = "seq, at_ns, end_ns, log_type, body"


class SpoolStore(SpoolFreeing):
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

    def watermark(self, exporter: str) -> int:
        with self.lock:
            row = self._db.execute(
                "SELECT seq FROM watermarks WHERE exporter = ?", (exporter,)
            ).fetchone()
        return int(row[0]) if row else 0

    def exporters(self) -> list[str]:
        """The exporters with a watermark: every one that frees nothing it has not passed."""
        with self.lock:
            return [row[0] for row in self._db.execute("SELECT exporter FROM watermarks")]

    def register(self, exporter: str, start_seq: int | None = None) -> None:
        """Track an exporter; a new one starts at the oldest spooled event.

        Events kept for queries that it has yet to export are pending again: they
        count against the spool's cap, and neither retention nor the cap deletes
        them before it has passed them."""
        with self.lock, self._transaction():
            oldest = self._db.execute(
                "SELECT COALESCE(MIN(seq), ?) FROM events", (self.next_seq,)
            ).fetchone()[0]
            watermark = (start_seq if start_seq is not None else oldest) - 1
            added = self._db.execute(
                "INSERT OR IGNORE INTO watermarks (exporter, seq) VALUES (?, ?)",
                (exporter, watermark),
            ).rowcount
            if added and watermark < self.freed_upto:
                again = self._size_between(watermark, self.freed_upto)
                self._db.execute("INSERT OR REPLACE INTO freed VALUES (1, ?)", (watermark,))
                self.freed_upto = watermark
                self.pending_bytes += again
                self.retained_bytes -= again

    def unregister(self, exporter: str) -> None:
        """Forget an exporter: its watermark, any batch it had begun, and its log (a
        later one of the same name starts afresh, not with this one's range). Not
        where its destination's log ends (`destination_log`): a later exporter there
        goes on with that log."""
        with self.lock, self._transaction():
            self._db.execute("DELETE FROM watermarks WHERE exporter = ?", (exporter,))
            self._db.execute("DELETE FROM intents WHERE exporter = ?", (exporter,))
            # And that it began: a later one of the name (a new destination, say) has
            # its own log, whose first manifest must say where it begins.
            self._db.execute("DELETE FROM begun WHERE exporter = ?", (exporter,))
            self._db.execute("DELETE FROM destinations WHERE exporter = ?", (exporter,))
            self._db.execute("DELETE FROM files WHERE exporter = ?", (exporter,))
        self.free()

    def leaves(self, first_seq: int, last_seq: int) -> list[bytes]:
        """The Merkle leaf hashes of events `first_seq`..`last_seq`."""
        with self.lock:
            return self.tree.leaves(first_seq, last_seq)

    def frontier_at(self, seq: int) -> Frontier:
        """The node's tree as it stood once event `seq` was in it."""
        with self.lock:
            return self.tree.frontier_at(seq)

    def intent(self, exporter: str) -> BatchIntent | None:
        """The batch an exporter started and has not committed (after a failure or crash)."""
        with self.lock:
            row = self._db.execute(
                "SELECT first_seq, last_seq FROM intents WHERE exporter = ?", (exporter,)
            ).fetchone()
        return BatchIntent(first_seq=int(row[0]), last_seq=int(row[1])) if row else None

    def begin_batch(self, exporter: str, first_seq: int, last_seq: int) -> None:
        """Write down a batch before uploading it, so a retry uploads the same batch.

        Committed with a sync of the log even in async durability: that makes the
        batch's events durable too (the WAL is synced up to here), so a power loss
        cannot take back events already uploaded and signed, and number others in
        their place."""
        with self.lock:
            if not self._synced:
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO intents VALUES (?, ?, ?)",
                    (exporter, first_seq, last_seq),
                )
            finally:
                if not self._synced:
                    self._db.execute("PRAGMA synchronous=NORMAL")

    def commit_files(
        self,
        exporter: str,
        files: Sequence[ExportedFile],
        watermark: int,
        since: int,
        destination: str = "",
        log_end: DestinationLog | None = None,
    ) -> None:
        """Record a batch's files and move the exporter's watermark from `since` (where
        the batch began) past it, in one transaction (which also frees what every
        exporter has passed); its log has begun at `destination`, and ends at
        `log_end` there (its signed checkpoint; None: as it was). `StaleBatchError` if
        the watermark is no longer at `since`: another exporter of the name committed
        first, and this batch's late commit must not move the watermark back."""
        with self.lock:
            with self._transaction():
                moved = self._db.execute(
                    "UPDATE watermarks SET seq = ? WHERE exporter = ? AND seq = ?",
                    (watermark, exporter, since),
                )
                if moved.rowcount != 1:
                    raise StaleBatchError(
                        f"exporter {exporter}: its watermark moved from {since} during a batch"
                    )
                now = time.time()
                self._db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (exporter, f.key, f.first_seq, f.last_seq, f.events, f.bytes, f.sha256, now)
                        for f in files
                    ],
                )
                self._db.execute("DELETE FROM intents WHERE exporter = ?", (exporter,))
                self._db.execute("INSERT OR IGNORE INTO begun (exporter) VALUES (?)", (exporter,))
                self._db.execute(
                    "INSERT OR REPLACE INTO destinations VALUES (?, ?)", (exporter, destination)
                )
                if log_end is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO destination_logs VALUES (?, ?, ?, ?)",
                        (destination, log_end.last_seq, log_end.size, log_end.root),
                    )
                freed = self._pass_exported()
            self._account_freed(freed)

    def has_begun(self, exporter: str, destination: str = "") -> bool:
        """Whether `exporter` committed a batch, with files or none, at `destination`
        last (its log there has begun; a later exporter of the name does not begin it
        again, but one that writes elsewhere begins a log there). Spools older than
        the `destinations` table take its log to be here; older than `begun`, they
        know it by its files."""
        with self.lock:
            row = self._db.execute(
                "SELECT destination FROM destinations WHERE exporter = ?", (exporter,)
            ).fetchone()
            if row is not None:
                return bool(row[0] == destination)
            query = (
                "SELECT 1 FROM begun WHERE exporter = ? "
                "UNION ALL SELECT 1 FROM files WHERE exporter = ? LIMIT 1"
            )
            return self._db.execute(query, (exporter, exporter)).fetchone() is not None

    def destination_log(self, destination: str) -> DestinationLog | None:
        """Where this node's log at `destination` ends (None: it has none there, or
        the spool is older than the record)."""
        with self.lock:
            row = self._db.execute(
                "SELECT last_seq, size, root FROM destination_logs WHERE destination = ?",
                (destination,),
            ).fetchone()
        if row is None:
            return None
        return DestinationLog(last_seq=int(row[0]), size=int(row[1]), root=bytes(row[2]))

    def files(self, exporter: str | None = None) -> list[tuple[str, ExportedFile]]:
        """(exporter, file) of every file recorded, oldest first."""
        query = "SELECT exporter, key, first_seq, last_seq, events, bytes, sha256 FROM files"
        args: tuple[str, ...] = ()
        if exporter is not None:
            query += " WHERE exporter = ?"
            args = (exporter,)
        with self.lock:
            rows = self._db.execute(query + " ORDER BY first_seq", args).fetchall()
        fields = ("key", "first_seq", "last_seq", "events", "bytes", "sha256")
        return [(row[0], ExportedFile(**dict(zip(fields, row[1:], strict=True)))) for row in rows]
