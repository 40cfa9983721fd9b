"""UsageService: storage used now (read from the store) and by month (from snapshots)."""

from __future__ import annotations

import datetime
from collections.abc import Callable

import grpc
import sqlalchemy as sa

from auditline.account.v1 import usage_pb2 as pb
from auditline.account.v1 import usage_pb2_grpc
from auditline.server.db import Database, tables
from auditline.server.objectstore import ObjectStore
from auditline.server.services._common import timestamp


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    def __init__(self, db: Database, store: ObjectStore, clock: Callable[[], float]) -> None:
        self.db = db
        self.store = store
        self.clock = clock

    def measure(self) -> pb.GetCurrentUsageResponse:
        """Read every bucket's usage from the store and record a snapshot."""
        with self.db.begin() as connection:
            names = list(
                connection.execute(
                    sa.select(tables.buckets.c.name).order_by(tables.buckets.c.name)
                ).scalars()
            )
        response = pb.GetCurrentUsageResponse(measure_time=timestamp(self.clock()))
        for name in names:
            usage = self.store.usage(name)
            response.buckets.add(bucket=name, bytes=usage.bytes, object_count=usage.objects)
            response.total_bytes += usage.bytes
            response.total_object_count += usage.objects
        with self.db.begin() as connection:
            connection.execute(
                tables.usage_snapshots.insert().values(
                    taken_at=self.clock(),
                    total_bytes=response.total_bytes,
                    total_objects=response.total_object_count,
                )
            )
        return response

    def scheduled_snapshot(self, interval: float) -> None:
        """The snapshot of a round of `--usage-snapshot-interval`, unless one was taken
        within half of it: of replicas on one database, one takes each snapshot (the
        others, whose rounds come later, find it), not every replica."""
        table = tables.usage_snapshots
        with self.db.begin() as connection:
            latest = connection.execute(sa.select(sa.func.max(table.c.taken_at))).scalar()
        if latest is None or latest <= self.clock() - interval / 2:
            self.measure()

    def GetCurrentUsage(
        self, request: pb.GetCurrentUsageRequest, context: grpc.ServicerContext
    ) -> pb.GetCurrentUsageResponse:
        return self.measure()

    def GetHistoricalUsage(
        self, request: pb.GetHistoricalUsageRequest, context: grpc.ServicerContext
    ) -> pb.GetHistoricalUsageResponse:
        t = tables.usage_snapshots
        query = sa.select(t.c.taken_at, t.c.total_bytes, t.c.total_objects).order_by(t.c.taken_at)
        if request.HasField("start_time"):
            query = query.where(t.c.taken_at >= request.start_time.ToNanoseconds() / 1e9)
        if request.HasField("end_time"):
            query = query.where(t.c.taken_at < request.end_time.ToNanoseconds() / 1e9)
        months: dict[tuple[int, int], list[tuple[int, int]]] = {}
        with self.db.begin() as connection:
            for taken_at, size, count in connection.execute(query):
                when = datetime.datetime.fromtimestamp(taken_at, datetime.UTC)
                months.setdefault((when.year, when.month), []).append((size, count))
        response = pb.GetHistoricalUsageResponse()
        for (year, month), snapshots in sorted(months.items()):
            sizes = [size for size, _ in snapshots]
            response.months.add(
                year=year,
                month=month,
                average_bytes=sum(sizes) // len(sizes),
                peak_bytes=max(sizes),
                object_count=snapshots[-1][1],
            )
        return response
