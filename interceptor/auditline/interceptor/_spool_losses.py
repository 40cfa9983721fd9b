"""The losses not yet in a written `AuditEventsDropped` marker, kept in the spool file.

While the spool is at its cap or its disk is full, the marker waits (one per episode),
and the count it is to carry lived only in the process: a `kill -9` then erased it, and
the loss went untold. The spool's writer saves the count here each round it changed
(every `commit_interval`, as async events are written), and the transaction that
writes the marker clears it; a spool opened again takes it up and writes its marker.

Beside it, the number of the last loss report (from an audit worker's serving process)
whose count the file has, saved and in a marker alike: a report sent again, to a worker
started again, is not counted twice.
"""

from __future__ import annotations

import sqlite3

import orjson

from auditline.interceptor._losses import Losses

__all__ = ["StoredLosses"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS losses (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS loss_reports (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
"""


class StoredLosses:
    """The losses row over the spool's connection. The caller holds the store's lock
    (and, for `clear`, its transaction)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.executescript(SCHEMA)

    def load(self) -> Losses | None:
        """The losses saved (a count of 0 when only the last report is known)."""
        report = self._db.execute("SELECT last FROM loss_reports").fetchone()
        reports = int(report[0]) if report else 0
        row = self._db.execute("SELECT body FROM losses").fetchone()
        if row is None:
            if not reports:
                return None
            return Losses(count=0, first_ns=0, last_ns=0, reasons={}, reports=reports)
        saved = orjson.loads(row[0])
        return Losses(
            count=int(saved["count"]),
            first_ns=int(saved["first_ns"]),
            last_ns=int(saved["last_ns"]),
            reasons={str(reason): int(count) for reason, count in saved["reasons"].items()},
            reports=reports,
        )

    def save(self, losses: Losses | None) -> None:
        if losses is None:
            self._db.execute("DELETE FROM losses")
            return
        self._keep_reports(losses)
        body = orjson.dumps(
            {
                "count": losses.count,
                "first_ns": losses.first_ns,
                "last_ns": losses.last_ns,
                "reasons": losses.reasons,
            }
        )
        self._db.execute("INSERT OR REPLACE INTO losses (id, body) VALUES (1, ?)", (body,))

    def settle(self, marker: Losses) -> None:
        """The marker of these losses is written (in the caller's transaction)."""
        self._db.execute("DELETE FROM losses")
        self._keep_reports(marker)

    def _keep_reports(self, losses: Losses) -> None:
        if losses.reports:
            self._db.execute(
                "INSERT INTO loss_reports (id, last) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET last = max(last, excluded.last)",
                (losses.reports,),
            )
