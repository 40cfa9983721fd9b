"""`SpoolView`: another process's (or thread's) read-only look at a spool's events: what
`AuditLogService.ListEvents`/`TailEvents` read, whether the spool is written in this
process or in an audit worker."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from auditline.interceptor._spool_queries import EventQueries

__all__ = ["SpoolView"]


class SpoolView:
    """Committed events of the spool at `path`, on a read-only connection of its own
    (SQLite's WAL lets it read while the spool writes). The spool must exist."""

    poll_interval = 0.05  # seconds between looks for new events while waiting

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"no spool at {path}")
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._db = db
        self.queries = EventQueries(db=db, lock=threading.RLock())

    @property
    def last_seq(self) -> int:
        """The newest committed event's number (0 when none is kept)."""
        with self.queries.lock:
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        return int(row[0])

    def wait_for_events(self, after_seq: int, timeout: float) -> bool:
        """Wait until an event past `after_seq` is committed, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while self.last_seq <= after_seq:
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_interval)
        return True

    def close(self) -> None:
        with self.queries.lock:
            self._db.close()
