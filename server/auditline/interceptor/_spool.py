"""The durable spool: finished events on local disk until every exporter has them.

SQLite in WAL mode (stdlib `sqlite3`). Events are redacted before they get here
(the interceptor builds them). `emit` only appends to a queue; one writer thread
group-commits batches, numbering events gap-free per node as it writes them.

Durability:
- `async` (default): the call returns before its event is on disk. Events not
  yet committed (at most `commit_interval` seconds' worth, 10 ms by default) are
  lost if the process dies; a clean shutdown loses nothing.
- `sync`: `emit` returns only after the event's batch is committed with
  `synchronous=FULL`; the interceptor must be fail-closed so a failure fails the
  call. `admit` refuses calls before they run when the spool cannot take them.

Backpressure when the spool holds `max_bytes`: `block` (wait up to
`block_timeout`, then refuse), `reject` (refuse at once; the interceptor answers
UNAVAILABLE without running the call) or `drop` (the event is dropped, counted,
and a marker event saying how many were lost and when is spooled as soon as there
is room).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from google.protobuf import json_format

from auditline.audit.v1 import event_pb2, options_pb2
from auditline.interceptor._core import AuditUnavailableError
from auditline.interceptor._formats import apievent_dict

__all__ = ["Spool", "SpoolStats", "SpooledEvent"]

log = logging.getLogger("auditline.interceptor")

DURABILITY = ("async", "sync")
BACKPRESSURE = ("block", "reject", "drop")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    at_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    log_type INTEGER NOT NULL,
    size INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    account TEXT NOT NULL,
    code INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_id ON events (event_id);
CREATE TABLE IF NOT EXISTS freed (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS watermarks (
    exporter TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS intents (
    exporter TEXT PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    exporter TEXT NOT NULL,
    key TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    events INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    written_at REAL NOT NULL,
    PRIMARY KEY (exporter, key)
);
"""


class SpooledEvent(NamedTuple):
    seq: int
    at_ns: int  # when the call arrived
    end_ns: int  # when it ended
    log_type: int
    body: bytes  # the event as protobuf's JSON mapping of ApiEvent, Sequence set

    def document(self) -> dict[str, Any]:
        return dict(orjson.loads(self.body))

    def event(self) -> event_pb2.ApiEvent:
        return json_format.ParseDict(self.document(), event_pb2.ApiEvent())


@dataclasses.dataclass
class SpoolStats:
    accepted: int = 0
    dropped: int = 0
    rejected: int = 0
    bytes: int = 0
    last_seq: int = 0


_Pending = tuple[dict[str, Any], int, int]  # document, at_ns, end_ns
_LOG_TYPES = {v.name: v.number for v in event_pb2.LogType.DESCRIPTOR.values}


class _Batch:
    __slots__ = ("committed", "error", "events")

    def __init__(self) -> None:
        self.events: list[_Pending] = []
        self.committed = threading.Event()
        self.error: BaseException | None = None


class Spool:
    """A `Sink` that keeps events durable on disk for the exporters."""

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
    ) -> None:
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {DURABILITY}")
        if backpressure not in BACKPRESSURE:
            raise ValueError(f"backpressure must be one of {BACKPRESSURE}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.node_id = node_id
        self.max_bytes = max_bytes
        self._hard_cap = max_bytes + max_bytes // 10
        self.durability = durability
        self.backpressure = backpressure
        self.commit_interval = commit_interval
        self.block_timeout = block_timeout
        # Exported events stay queryable (`query`) this long; they no longer count
        # against `max_bytes`, which bounds only what some exporter still needs.
        self.retain_seconds = retain_seconds
        self._new_events = threading.Condition()
        self.stats = SpoolStats()
        self._db = self._connect()
        # One connection shared by the writer and the exporters, one at a time.
        self._db_lock = threading.RLock()
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        last_file = self._db.execute("SELECT COALESCE(MAX(last_seq), 0) FROM files").fetchone()
        # Freed events leave the table; the numbering must still never go back.
        self._next_seq = max(int(row[0]), int(last_file[0])) + 1
        freed = self._db.execute("SELECT seq FROM freed").fetchone()
        self._freed_upto = int(freed[0]) if freed else 0
        self.stats.bytes = int(
            self._db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM events WHERE seq > ?", (self._freed_upto,)
            ).fetchone()[0]
        )
        self.stats.last_seq = self._next_seq - 1
        mutex = threading.RLock()
        self._lock = threading.Condition(mutex)  # room in the spool (admit waits on it)
        self._work = threading.Condition(mutex)  # events to write (the sync writer waits)
        self._batch = _Batch()
        self._dropped_since: tuple[int, int, int] | None = None  # count, first ns, last ns
        self._force_marker = False
        # (since ns, LogType names kept or None for all), oldest first: which logs
        # were switched on when; see `keep_logs`.
        self._gates: list[tuple[int, frozenset[str] | None]] = []
        self._closed = False
        self._writer = threading.Thread(target=self._run, name="auditline-spool", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed batch survives a power loss, not only a crash.
        db.execute(
            "PRAGMA synchronous=FULL" if self.durability == "sync" else "PRAGMA synchronous=NORMAL"
        )
        db.execute("PRAGMA busy_timeout=10000")
        db.executescript(_SCHEMA)
        self.path.chmod(0o600)
        return db

    # --- the request path ----------------------------------------------------------

    def admit(self) -> None:
        """Called before a call runs: refuse it when its event could not be kept."""
        if self._closed:
            raise AuditUnavailableError("the audit spool is closed")
        if self.stats.bytes < self.max_bytes or self.backpressure == "drop":
            return
        if self.backpressure == "reject":
            self.stats.rejected += 1
            raise AuditUnavailableError("the audit spool is full")
        with self._lock:
            if not self._lock.wait_for(
                lambda: self.stats.bytes < self.max_bytes, self.block_timeout
            ):
                self.stats.rejected += 1
                raise AuditUnavailableError(
                    f"the audit spool stayed full for {self.block_timeout:g}s"
                )

    def emit(self, event: event_pb2.ApiEvent) -> None:
        """Queue an event; in sync durability, return once it is committed."""
        self.emit_document(
            apievent_dict(event),
            event.request.request_time.ToNanoseconds(),
            event.response.response_time.ToNanoseconds(),
        )

    def emit_document(self, document: dict[str, Any], at_ns: int, end_ns: int) -> None:
        """`emit` for an event already in its JSON form (what the interceptor hands over)."""
        if self._gates and not self._wanted(document.get("LogType", ""), at_ns):
            return  # a log that was switched off when the call came (not a loss)
        # `block` and `reject` refuse calls before they run (`admit`); the events of
        # those refusals may use a tenth more, then events are dropped (and counted).
        limit = self.max_bytes if self.backpressure == "drop" else self._hard_cap
        if self.stats.bytes >= limit:
            now = time.time_ns()
            with self._lock:
                count, first, _ = self._dropped_since or (0, now, now)
                self._dropped_since = (count + 1, first, now)
                self.stats.dropped += 1
            return
        with self._lock:
            if self._closed:
                raise AuditUnavailableError("the audit spool is closed")
            batch = self._batch
            batch.events.append((document, at_ns, end_ns))
            self.stats.accepted += 1
            if self.durability == "sync":
                self._work.notify()
        if self.durability == "sync":
            if not batch.committed.wait(self.block_timeout):
                raise AuditUnavailableError("the audit spool did not commit in time")
            if batch.error is not None:
                raise AuditUnavailableError(
                    f"the audit spool could not write ({type(batch.error).__name__})"
                )

    def keep_logs(self, log_types: frozenset[str] | None, since_ns: int | None = None) -> None:
        """From `since_ns` (now by default) keep only events of these logs (`LogType`
        names; None: all). The events of calls that came earlier are not affected,
        even when they reach the spool later."""
        since = time.time_ns() if since_ns is None else since_ns
        with self._lock:
            self._gates = [g for g in self._gates[-8:] if g[0] < since] + [(since, log_types)]

    def _wanted(self, log_type: str, at_ns: int) -> bool:
        kept: frozenset[str] | None = None
        for since, log_types in self._gates:
            if since > at_ns:
                break
            kept = log_types
        return kept is None or log_type in kept

    # --- the writer ------------------------------------------------------------------

    def _marker(self) -> _Pending | None:
        if self._dropped_since is None:
            return None
        if self.stats.bytes >= self.max_bytes and not self._closed and not self._force_marker:
            return None  # still dropping: one marker per episode, written when it ends
        count, first, last = self._dropped_since
        self._dropped_since = None
        marker = event_pb2.ApiEvent(
            event_name="AuditEventsDropped",
            version="2",
            service="auditline.audit.v1",
            method="AuditEventsDropped",
            activity=options_pb2.ACTIVITY_OTHER,
            log_type=event_pb2.LOG_TYPE_SETTINGS,
        )
        marker.request.request_time.FromNanoseconds(first)
        marker.request.request_params.update({"dropped_events": count})
        marker.response.response_time.FromNanoseconds(last)
        marker.response.response_code = 15  # DATA_LOSS
        marker.response.response_status = "DATA_LOSS"
        marker.response.response_error = (
            f"{count} audit events were dropped because the spool was full"
        )
        marker.response.response_body.SetInParent()
        log.error("%d audit events were dropped (spool full)", count)
        return apievent_dict(marker), first, last

    def _run(self) -> None:
        while True:
            if self.durability == "sync":
                # Write as soon as there is anything: callers are waiting. Events that
                # arrive during a commit form the next batch (group commit).
                with self._work:
                    self._work.wait_for(
                        lambda: bool(self._batch.events) or self._closed or self._force_marker,
                        self.commit_interval,
                    )
            else:
                time.sleep(self.commit_interval)
            with self._lock:
                batch, self._batch = self._batch, _Batch()
                marker = self._marker()
                closing = self._closed
            if marker is not None:
                batch.events.insert(0, marker)
            if batch.events:
                self._write(batch)
            else:
                batch.committed.set()
            if closing:
                return

    def _write(self, batch: _Batch) -> None:
        rows = []
        size = 0
        seq = self._next_seq
        for document, at_ns, end_ns in batch.events:
            document["Sequence"] = str(seq)  # protobuf's JSON writes int64 as text
            if not document.get("NodeId"):
                document["NodeId"] = self.node_id
            body = orjson.dumps(document)
            rows.append(
                (
                    seq,
                    at_ns,
                    end_ns,
                    _LOG_TYPES.get(document.get("LogType", ""), 0),
                    len(body),
                    document.get("EventId", ""),
                    document.get("EventName", ""),
                    document.get("Request", {}).get("AccountName", ""),
                    document.get("Response", {}).get("ResponseCode", 0),
                    body,
                )
            )
            size += len(body)
            seq += 1
        try:
            with self._db_lock:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany(
                        "INSERT INTO events (seq, at_ns, end_ns, log_type, size, event_id, "
                        "event_name, account, code, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    self._db.execute("COMMIT")
                except sqlite3.Error:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            batch.error = exc
            log.error("the audit spool could not write %d events: %s", len(rows), exc)
        else:
            self._next_seq = seq
            with self._lock:
                self.stats.bytes += size
                self.stats.last_seq = seq - 1
            with self._new_events:
                self._new_events.notify_all()
        batch.committed.set()

    # --- the exporters' side -----------------------------------------------------------

    def read(self, after_seq: int, limit: int = 1000) -> list[SpooledEvent]:
        with self._db_lock:
            rows = self._db.execute(
                "SELECT seq, at_ns, end_ns, log_type, body FROM events WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return list(map(SpooledEvent._make, rows))

    def iterate(self, after_seq: int, batch: int = 1000) -> Iterator[SpooledEvent]:
        while True:
            events = self.read(after_seq, batch)
            if not events:
                return
            yield from events
            after_seq = events[-1].seq

    def watermark(self, exporter: str) -> int:
        with self._db_lock:
            row = self._db.execute(
                "SELECT seq FROM watermarks WHERE exporter = ?", (exporter,)
            ).fetchone()
        return int(row[0]) if row else 0

    def register(self, exporter: str, start_seq: int | None = None) -> None:
        """Track an exporter; a new one starts at the oldest spooled event."""
        with self._db_lock:
            oldest = self._db.execute(
                "SELECT COALESCE(MIN(seq), ?) FROM events", (self._next_seq,)
            ).fetchone()[0]
            self._db.execute(
                "INSERT OR IGNORE INTO watermarks (exporter, seq) VALUES (?, ?)",
                (exporter, (start_seq if start_seq is not None else oldest) - 1),
            )

    def unregister(self, exporter: str) -> None:
        with self._db_lock:
            self._db.execute("DELETE FROM watermarks WHERE exporter = ?", (exporter,))
        self.free()

    def intent(self, exporter: str) -> tuple[int, int] | None:
        """The batch an exporter started and has not committed (after a failure or crash)."""
        with self._db_lock:
            row = self._db.execute(
                "SELECT first_seq, last_seq FROM intents WHERE exporter = ?", (exporter,)
            ).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def begin_batch(self, exporter: str, first_seq: int, last_seq: int) -> None:
        """Write down a batch before uploading it, so a retry uploads the same batch."""
        with self._db_lock:
            self._db.execute(
                "INSERT OR REPLACE INTO intents VALUES (?, ?, ?)", (exporter, first_seq, last_seq)
            )

    def commit_files(
        self, exporter: str, files: list[tuple[str, int, int, int, int, str]], watermark: int
    ) -> None:
        """Record a batch's files (key, first, last, events, bytes, sha256) and move the
        exporter's watermark past it, in one transaction."""
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                self._db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(exporter, *f, now) for f in files],
                )
                self._db.execute(
                    "UPDATE watermarks SET seq = ? WHERE exporter = ?", (watermark, exporter)
                )
                self._db.execute("DELETE FROM intents WHERE exporter = ?", (exporter,))
                freed = self._delete_passed()  # in the same transaction: one commit
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._freed(freed)

    def files(self, exporter: str | None = None) -> list[tuple[str, str, int, int, int, str]]:
        query = "SELECT exporter, key, first_seq, last_seq, events, sha256 FROM files"
        args: tuple[str, ...] = ()
        if exporter is not None:
            query += " WHERE exporter = ?"
            args = (exporter,)
        with self._db_lock:
            rows = self._db.execute(query + " ORDER BY first_seq", args).fetchall()
        return [tuple(row) for row in rows]

    def files_written(self) -> list[tuple[str, str, int, int, int]]:
        """(exporter, key, first, last, bytes) of every file recorded."""
        with self._db_lock:
            rows = self._db.execute(
                "SELECT exporter, key, first_seq, last_seq, bytes FROM files"
            ).fetchall()
        return [tuple(row) for row in rows]

    def free(self) -> None:
        """Delete the events every exporter has passed; wake blocked callers."""
        with self._db_lock:
            freed = self._delete_passed()
        self._freed(freed)

    def _delete_passed(self) -> int:
        """Account for the events every exporter has passed and delete those past the
        retention window; return the bytes no longer held for exporters (the caller
        holds the db lock)."""
        row = self._db.execute("SELECT MIN(seq), COUNT(*) FROM watermarks").fetchone()
        if not row[1] or row[0] <= self._freed_upto:
            return 0  # no exporter yet, or none moved: keep everything
        passed = int(row[0])
        freed = int(
            self._db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM events WHERE seq > ? AND seq <= ?",
                (self._freed_upto, passed),
            ).fetchone()[0]
        )
        self._db.execute("INSERT OR REPLACE INTO freed VALUES (1, ?)", (passed,))
        self._freed_upto = passed
        if self.retain_seconds > 0:
            oldest = time.time_ns() - int(self.retain_seconds * 1e9)
            self._db.execute("DELETE FROM events WHERE seq <= ? AND at_ns < ?", (passed, oldest))
        else:
            self._db.execute("DELETE FROM events WHERE seq <= ?", (passed,))
        return freed

    def query(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        after_seq: int = 0,
        event_names: list[str] | None = None,
        account: str = "",
        codes: list[int] | None = None,
        log_types: list[int] | None = None,
        limit: int = 100,
    ) -> list[SpooledEvent]:
        """Events still on this node (the retention window), oldest first."""
        where = ["seq > ?"]
        args: list[Any] = [after_seq]
        if since_ns is not None:
            where.append("at_ns >= ?")
            args.append(since_ns)
        if until_ns is not None:
            where.append("at_ns < ?")
            args.append(until_ns)
        if event_names:
            where.append(f"event_name IN ({', '.join('?' * len(event_names))})")
            args += event_names
        if account:
            where.append("account = ?")
            args.append(account)
        if codes:
            where.append(f"code IN ({', '.join('?' * len(codes))})")
            args += codes
        if log_types:
            where.append(f"log_type IN ({', '.join('?' * len(log_types))})")
            args += log_types
        sql = (
            "SELECT seq, at_ns, end_ns, log_type, body FROM events WHERE "  # noqa: S608
            + " AND ".join(where)
            + " ORDER BY seq LIMIT ?"
        )
        with self._db_lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return list(map(SpooledEvent._make, rows))

    def seq_of(self, event_id: str) -> int | None:
        """The sequence number of a retained event, by its id."""
        with self._db_lock:
            row = self._db.execute(
                "SELECT seq FROM events WHERE event_id = ?", (event_id,)
            ).fetchone()
        return int(row[0]) if row else None

    def wait_for_events(self, after_seq: int, timeout: float) -> bool:
        """Wait until an event past `after_seq` is committed, or `timeout` passes."""
        with self._new_events:
            return self._new_events.wait_for(lambda: self.stats.last_seq > after_seq, timeout)

    def _freed(self, size: int) -> None:
        if size:
            with self._lock:
                self.stats.bytes -= size
                self._lock.notify_all()

    def flush(self, timeout: float | None = 10.0, *, with_drop_marker: bool = False) -> bool:
        """Wait until everything emitted so far is committed (and, when asked, the
        marker of events dropped so far, even if the spool is still full)."""
        with self._lock:
            self._force_marker = with_drop_marker
            batch = self._batch
        done = batch.committed.wait(timeout)
        if with_drop_marker:
            with self._lock:
                batch = self._batch
            done = batch.committed.wait(timeout) and done
            self._force_marker = False
        return done

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._work.notify()
        self._writer.join(30)
        with self._db_lock:
            self._db.close()
