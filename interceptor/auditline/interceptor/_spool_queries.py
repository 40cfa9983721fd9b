"""The node's queries over the events its spool still keeps (the retention window):
what `AuditLogService.ListEvents`/`TailEvents` and `auditline prove` read."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from auditline.interceptor._spool_records import EventPage, SpooledEvent

__all__ = ["EventQueries"]

_EVENT_COLUMNS = "seq, at_ns, end_ns, log_type, body"


@dataclasses.dataclass(frozen=True, kw_only=True)
class EventQueries:
    """Queries on the spool's connection, under the store's lock."""

    db: sqlite3.Connection
    lock: threading.RLock

    def page(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        after_seq: int = 0,
        event_names: Sequence[str] = (),
        account: str = "",
        codes: Sequence[int] = (),
        log_types: Sequence[int] = (),
        limit: int = 100,
        max_bytes: int | None = None,
    ) -> EventPage:
        """Events still on this node (the retention window), oldest first: at most
        `limit` of them and, past the first, at most `max_bytes` of JSON."""
        where = ["seq > ?"]
        args: list[Any] = [after_seq]
        if since_ns is not None:
            where.append("at_ns >= ?")
            args.append(since_ns)
        if until_ns is not None:
            where.append("at_ns < ?")
            args.append(until_ns)
        for column, values in (
            ("event_name", event_names),
            ("code", codes),
            ("log_type", log_types),
        ):
            if values:
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                args += values
        if account:
            where.append("account = ?")
            args.append(account)
        sql = (
            "SELECT seq, size FROM events WHERE "  # noqa: S608
            + " AND ".join(where)
            + " ORDER BY seq LIMIT ?"
        )
        with self.lock:
            sizes = self.db.execute(sql, (*args, limit + 1)).fetchall()
            chosen: list[int] = []
            used = 0
            for seq, size in sizes[:limit]:
                if chosen and max_bytes is not None and used + size > max_bytes:
                    break
                chosen.append(seq)
                used += size
            events = []
            if chosen:
                rows = self.db.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq >= ? AND seq <= ? "  # noqa: S608
                    f"AND seq IN ({', '.join('?' * len(chosen))}) ORDER BY seq",
                    (chosen[0], chosen[-1], *chosen),
                ).fetchall()
                events = [SpooledEvent(*row) for row in rows]
        return EventPage(events=events, more=len(sizes) > len(chosen))

    def seq_of(self, event_id: str) -> int | None:
        """The sequence number of a retained event, by its id."""
        with self.lock:
            row = self.db.execute(
                "SELECT seq FROM events WHERE event_id = ?", (event_id,)
            ).fetchone()
        return int(row[0]) if row else None
