"""The node's Merkle tree in the spool file: every spooled event is a leaf, in order.

Leaf i (from 0) is the event numbered `base + 1 + i`; `base` is 0 for a spool made by
this version (an older spool's tree starts after the events it had already exported).
Leaf hashes are kept for good (32 bytes an event), so that any event can be proven;
each exporter keeps the tree's right edge (`Frontier`) at its watermark, so that a
batch extends it in time proportional to the batch. Every method runs inside the
caller's lock (and transaction, where it writes).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

import orjson

from auditline.interceptor._leaf import event_leaf
from auditline.interceptor._merkle import Frontier

__all__ = ["TreeLog"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS leaves (
    seq INTEGER PRIMARY KEY,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tree (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    base INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS frontiers (
    exporter TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    hashes BLOB NOT NULL
);
"""


def pack(frontier: Frontier) -> bytes:
    return b"".join(frontier.hashes)


def unpack(size: int, blob: bytes) -> Frontier:
    return Frontier(size, [blob[i : i + 32] for i in range(0, len(blob), 32)])


class TreeLog:
    """Leaves and frontiers over the spool's connection."""

    def __init__(self, db: sqlite3.Connection, next_seq: int, freed_upto: int) -> None:
        self._db = db
        db.executescript(SCHEMA)
        row = db.execute("SELECT base FROM tree").fetchone()
        if row is None:
            # A new spool starts its tree at 0; one made before trees existed, after
            # the events every exporter had passed (the rest get their leaves now).
            base = 0 if next_seq == 1 else freed_upto
            db.execute("INSERT INTO tree VALUES (1, ?)", (base,))
            self.base = base
            self._backfill(base)
        else:
            self.base = int(row[0])

    def _backfill(self, after: int) -> None:
        rows = self._db.execute("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq", (after,))
        self.append((seq, event_leaf(orjson.loads(body))) for seq, body in rows.fetchall())

    def append(self, leaves: Iterable[tuple[int, bytes]]) -> None:
        """Add (seq, leaf hash) rows; the caller's transaction commits them."""
        self._db.executemany("INSERT INTO leaves (seq, hash) VALUES (?, ?)", list(leaves))

    def leaves(self, first_seq: int, last_seq: int) -> list[bytes]:
        """The leaf hashes of events `first_seq`..`last_seq`, in order."""
        rows = self._db.execute(
            "SELECT hash FROM leaves WHERE seq >= ? AND seq <= ? ORDER BY seq",
            (first_seq, last_seq),
        ).fetchall()
        return [bytes(row[0]) for row in rows]

    def size_at(self, seq: int) -> int:
        """The tree's size once event `seq` is in it."""
        return seq - self.base

    def frontier_at(self, seq: int) -> Frontier:
        """The tree's right edge once event `seq` is in it (from the leaves: O(n))."""
        frontier = Frontier()
        frontier.extend(self.leaves(self.base + 1, seq))
        return frontier

    def frontier(self, exporter: str, watermark: int) -> Frontier:
        """An exporter's frontier at its watermark (made from the leaves the first time)."""
        row = self._db.execute(
            "SELECT size, hashes FROM frontiers WHERE exporter = ?", (exporter,)
        ).fetchone()
        if row is not None and int(row[0]) == self.size_at(watermark):
            return unpack(int(row[0]), bytes(row[1]))
        return self.frontier_at(watermark)

    def save_frontier(self, exporter: str, frontier: Frontier) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO frontiers VALUES (?, ?, ?)",
            (exporter, frontier.size, pack(frontier)),
        )

    def forget(self, exporter: str) -> None:
        self._db.execute("DELETE FROM frontiers WHERE exporter = ?", (exporter,))


def leaves_of(bodies: Sequence[bytes]) -> list[bytes]:
    """The leaf hashes of numbered event bodies."""
    return [event_leaf(orjson.loads(body)) for body in bodies]
