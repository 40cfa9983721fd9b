"""UsageService: the bytes and objects in each bucket now, and each month's peak."""

from __future__ import annotations

import datetime
from pathlib import Path

import sqlalchemy as sa

from auditline.account.v1 import usage_pb2
from auditline.server.db import Database, tables
from auditline.server.objectstore import FilesystemStore
from auditline.server.services.usage import UsageServicer
from tests.support.account_server import Server, new_bucket


def test_usage_now_and_by_month(server: Server) -> None:
    usage = server.admin.usage
    name = new_bucket(server.admin)
    server.store.put_object(name, "a", b"x" * 100)
    server.store.put_object(name, "b", b"y" * 50)
    current = usage.GetCurrentUsage(usage_pb2.GetCurrentUsageRequest())
    mine = [b for b in current.buckets if b.bucket == name]
    assert [(b.bytes, b.object_count) for b in mine] == [(150, 2)]
    assert current.total_bytes >= 150
    history = usage.GetHistoricalUsage(usage_pb2.GetHistoricalUsageRequest())
    now = datetime.datetime.now(datetime.UTC)
    this_month = [m for m in history.months if (m.year, m.month) == (now.year, now.month)]
    assert this_month
    assert this_month[0].peak_bytes >= current.total_bytes


def test_replicas_on_one_database_take_each_scheduled_snapshot_once(tmp_path: Path) -> None:
    """Two replicas' snapshot rounds, the second a little later: one snapshot a round."""
    db = Database(f"sqlite:///{tmp_path / 'state.db'}")
    store = FilesystemStore(tmp_path / "objects")
    now = [1_000_000.0]
    replicas = [UsageServicer(db, store, lambda: now[0]) for _ in range(2)]
    for _ in range(3):  # three rounds of an hour
        for replica in replicas:
            replica.scheduled_snapshot(3600)
            now[0] += 60  # the second replica's round comes a minute later
        now[0] += 3600 - 120
    with db.begin() as connection:
        taken = connection.execute(sa.select(tables.usage_snapshots.c.taken_at)).scalars().all()
    assert taken == [1_000_000.0, 1_003_600.0, 1_007_200.0]
    db.close()
