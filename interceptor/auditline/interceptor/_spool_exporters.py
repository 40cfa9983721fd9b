"""The exporters' bookkeeping in the spool: each one's watermark, the batch it began
and has not committed (its intent), the files it wrote, where its log is, and where
each destination's log ends.

`SpoolStore`'s base class (over `SpoolFreeing`: a commit frees what every exporter
has passed). Every method takes `lock`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from auditline.interceptor._spool_freeing import SpoolFreeing
from auditline.interceptor._spool_records import BatchIntent, DestinationLog, ExportedFile

__all__ = ["SpoolExporters", "StaleBatchError"]


class StaleBatchError(RuntimeError):
    """A batch's commit found its exporter's watermark moved: another exporter of the
    same name (the one that replaced it) went on meanwhile."""


class SpoolExporters(SpoolFreeing):
    """The state is the store's, set in its constructor."""

    _synced: bool

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
                        "INSERT OR REPLACE INTO destination_logs VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            destination,
                            log_end.log_id,
                            log_end.manifest_key,
                            ",".join(str(t) for t in sorted(log_end.log_types)),
                            log_end.last_seq,
                            log_end.size,
                            log_end.root,
                        ),
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
                "SELECT log_id, manifest_key, log_types, last_seq, size, root "
                "FROM destination_logs WHERE destination = ?",
                (destination,),
            ).fetchone()
        if row is None:
            return None
        return DestinationLog(
            log_id=str(row[0]),
            manifest_key=str(row[1]),
            log_types=frozenset(int(t) for t in str(row[2]).split(",") if t),
            last_seq=int(row[3]),
            size=int(row[4]),
            root=bytes(row[5]),
        )

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
