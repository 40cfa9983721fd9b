"""The spool's tables: events (with the columns queries filter on), the exporters'
watermarks, batch intents and files, which exporters have begun their log and where,
where each destination's log ends, and how far events are freed. The node's Merkle
tree keeps its own table (`_spool_tree`)."""

from __future__ import annotations

import sqlite3

__all__ = ["SCHEMA", "create_schema"]

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS begun (
    exporter TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS destinations (
    exporter TEXT PRIMARY KEY,
    destination TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS destination_logs (
    destination TEXT PRIMARY KEY,
    log_id TEXT NOT NULL,
    manifest_key TEXT NOT NULL,
    log_types TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL
);
"""


def create_schema(db: sqlite3.Connection) -> None:
    """Make the tables. Later versions add tables, never columns: a spool stays
    readable by the release before (a rollback), which knows only its own."""
    db.executescript(SCHEMA)
