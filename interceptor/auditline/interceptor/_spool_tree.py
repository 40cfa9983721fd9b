"""The node's Merkle tree in the spool file: every spooled event is a leaf, in order.

Leaf i (from 0) is the event numbered `base + 1 + i`; `base` is 0 for a spool made by
this version (an older spool's tree starts after the events it had already exported).
The spool's writer keeps the hash of every complete subtree as the tree grows
(`nodes`: level 0 the leaves, level k the subtree of 2^k leaves starting at leaf
index * 2^k): about two rows and one extra SHA-256 an event. The tree as it stood at
any size is then a handful of lookups, so an exporter's checkpoint costs it nothing
per event. Once every exporter has passed an event, the nodes before it are pruned
but for the few the tree there is made of. Every method runs inside the caller's lock (and
transaction, where it writes).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence

import orjson

from auditline.interceptor._leaf import event_leaf
from auditline.interceptor._merkle import Frontier

__all__ = ["TreeLog", "leaves_of"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tree (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    base INTEGER NOT NULL,
    size INTEGER NOT NULL
);
"""


def leaves_of(bodies: Sequence[bytes]) -> list[bytes]:
    """The leaf hashes of numbered event bodies."""
    return [event_leaf(orjson.loads(body)) for body in bodies]


class TreeLog:
    """Complete subtree hashes over the spool's connection."""

    def __init__(self, db: sqlite3.Connection, next_seq: int, freed_upto: int) -> None:
        self._db = db
        db.executescript(SCHEMA)
        row = db.execute("SELECT base FROM tree").fetchone()
        if row is None:
            # A new spool starts its tree at 0; one made before trees existed, after
            # the events every exporter had passed (the rest get their leaves now).
            base = 0 if next_seq == 1 else freed_upto
            db.execute("INSERT INTO tree VALUES (1, ?, 0)", (base,))
        else:
            base = int(row[0])
        self.base = base
        self._edge = self._frontier(self._stored_size())  # where leaves go next
        if row is None:
            rows = db.execute("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq", (base,))
            self.append(event_leaf(orjson.loads(body)) for _, body in rows.fetchall())

    @property
    def size(self) -> int:
        return self._edge.size

    def append(self, leaves: Iterable[bytes]) -> None:
        """Add the next leaves, with the subtrees they complete; the caller's
        transaction commits them (`rollback` forgets them when it does not)."""
        hashes, size, sha256 = self._edge.hashes, self._edge.size, hashlib.sha256
        rows = []
        for leaf in leaves:
            rows.append((0, size, leaf))
            node, level, bits = leaf, 0, size
            while bits & 1:
                node = sha256(b"\x01" + hashes.pop() + node).digest()
                level += 1
                bits >>= 1
                rows.append((level, size >> level, node))
            hashes.append(node)
            size += 1
        self._db.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", rows)
        self._db.execute("UPDATE tree SET size = ?", (size,))
        self._edge.size = size

    def _stored_size(self) -> int:
        return int(self._db.execute("SELECT size FROM tree").fetchone()[0])

    def rollback(self) -> None:
        """The transaction that appended failed: go back to the tree as stored."""
        self._edge = self._frontier(self._stored_size())

    def prune(self, seq: int) -> None:
        """Forget the nodes no tree from event `seq` on needs (every exporter has passed
        it): those entirely before it, but the subtrees the tree at `seq` is made of.
        Keeps the spool bounded; the exported files and manifests prove the rest."""
        size = seq - self.base
        keep = self._nodes(size)
        # Level by level, a range of the key: only the rows that go are read. (One
        # condition on `(idx + 1) << level` read every node kept, at each file an
        # exporter commits: 2 rows an event retained for queries.)
        self._db.executemany(
            "DELETE FROM nodes WHERE level = ? AND idx < ?",
            [(level, size >> level) for level in range(self.size.bit_length() + 1)],
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO nodes (level, idx, hash) VALUES (?, ?, ?)", keep
        )

    def leaves(self, first_seq: int, last_seq: int) -> list[bytes]:
        """The leaf hashes of events `first_seq`..`last_seq`, in order."""
        rows = self._db.execute(
            "SELECT hash FROM nodes WHERE level = 0 AND idx >= ? AND idx <= ? ORDER BY idx",
            (first_seq - self.base - 1, last_seq - self.base - 1),
        ).fetchall()
        return [row[0] for row in rows]

    def frontier_at(self, seq: int) -> Frontier:
        """The tree as it stood once event `seq` was in it."""
        return self._frontier(seq - self.base)

    def _frontier(self, size: int) -> Frontier:
        return Frontier(size, [node[2] for node in self._nodes(size)])

    def _nodes(self, size: int) -> list[tuple[int, int, bytes]]:
        """(level, index, hash) of the complete subtrees the tree of `size` is made of."""
        nodes, start = [], 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                index = start >> level
                row = self._db.execute(
                    "SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, index)
                ).fetchone()
                if row is None:
                    raise LookupError(f"the spool lacks the tree's node {level}/{index}")
                nodes.append((level, index, row[0]))
                start += 1 << level
        return nodes
