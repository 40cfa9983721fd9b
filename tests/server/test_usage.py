"""UsageService: the bytes and objects in each bucket now, and each month's peak."""

from __future__ import annotations

import datetime

from auditline.account.v1 import usage_pb2
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
