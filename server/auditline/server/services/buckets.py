"""BucketService: real buckets in the object store, catalogued in the database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from auditline.account.v1 import bucket_pb2 as pb
from auditline.account.v1 import bucket_pb2_grpc
from auditline.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from auditline.server.accounts import ROLE_STANDARD
from auditline.server.db import Database, require_row, tables
from auditline.server.echo import shown
from auditline.server.guard import current_caller
from auditline.server.objectstore import (
    BucketExistsError,
    BucketNotEmptyError,
    NoSuchBucketError,
    ObjectStore,
    Retention,
    bucket_name_problem,
)
from auditline.server.services._common import (
    AUDIT_TARGET_LOCK,
    EXPORTERS_LOCK,
    next_page_token,
    page,
    resource_id,
    timestamp,
)
from auditline.server.services.permissions import covers
from auditline.server.sessions import Caller

_MODES = {pb.RETENTION_MODE_GOVERNANCE: "GOVERNANCE", pb.RETENTION_MODE_COMPLIANCE: "COMPLIANCE"}


def _retention(message: pb.Retention, field: str) -> Retention | None:
    if message.mode == pb.RETENTION_MODE_UNSPECIFIED and not message.days:
        return None
    if message.mode not in _MODES:
        raise InvalidArgumentError.field(f"{field}.mode", "must be GOVERNANCE or COMPLIANCE")
    if not 1 <= message.days <= 36500:
        raise InvalidArgumentError.field(f"{field}.days", "must be 1 to 36500")
    return Retention(mode=_MODES[message.mode], days=message.days)


def require_bucket(connection: Connection, name: str) -> dict[str, Any]:
    """The bucket's row; NOT_FOUND when there is none."""
    return require_row(connection, tables.buckets.c.name, name, f"buckets/{name}")


def _message(row: dict[str, Any]) -> pb.Bucket:
    bucket = pb.Bucket(
        name=f"buckets/{row['name']}",
        immutable=row["immutable"],
        audit_logging_enabled=row["audit_logging"],
        create_time=timestamp(row["created_at"]),
    )
    if row["retention_mode"]:
        bucket.default_retention.mode = row["retention_mode"]
        bucket.default_retention.days = row["retention_days"]
    return bucket


def visible_buckets(connection: Connection, caller: Caller) -> Callable[[str], bool]:
    """Which buckets a caller may see: all, or those its permissions name."""
    if caller.role != ROLE_STANDARD:
        return lambda name: True
    p, b = tables.permissions, tables.account_permissions
    rows = [
        dict(r)
        for r in connection.execute(
            sa.select(p)
            .join(b, b.c.permission_id == p.c.id)
            .where(b.c.account_id == caller.account_id)
        ).mappings()
    ]
    return lambda name: any(covers(row, name) for row in rows)


class BucketServicer(bucket_pb2_grpc.BucketServiceServicer):
    def __init__(self, db: Database, store: ObjectStore, clock: Callable[[], float]) -> None:
        self.db = db
        self.store = store
        self.clock = clock

    def CreateBucket(
        self, request: pb.CreateBucketRequest, context: grpc.ServicerContext
    ) -> pb.CreateBucketResponse:
        name = request.bucket_id
        problem = bucket_name_problem(name)
        if problem:
            raise InvalidArgumentError.field("bucket_id", problem)
        retention = _retention(request.default_retention, "default_retention")
        if retention is not None and not request.immutable:
            raise InvalidArgumentError.field("default_retention", "needs immutable = true")
        with self.db.begin() as connection:
            if connection.execute(
                sa.select(tables.buckets.c.name).where(tables.buckets.c.name == name)
            ).first():
                raise AlreadyExistsError(f"buckets/{name} exists already")
            try:
                self.store.create_bucket(name, object_lock=request.immutable, retention=retention)
            except BucketExistsError:
                # Outside the catalogue (see --bucket-mismatch): the name is taken, as
                # by another account's bucket in S3.
                raise AlreadyExistsError(
                    f"a bucket named {name} exists in the object store, outside this "
                    "service's catalogue"
                ) from None
            row = {
                "name": name,
                "immutable": request.immutable,
                "retention_mode": request.default_retention.mode if retention else 0,
                "retention_days": retention.days if retention else 0,
                "audit_logging": False,
                "created_at": self.clock(),
            }
            try:
                connection.execute(tables.buckets.insert().values(**row))
            except IntegrityError:
                # Another replica's create of the name, committed between the check
                # above and this insert (a store may accept a second create of a
                # bucket its owner has, as S3 in us-east-1 does).
                raise AlreadyExistsError(f"buckets/{name} exists already") from None
        return pb.CreateBucketResponse(bucket=_message(row))

    def GetBucket(
        self, request: pb.GetBucketRequest, context: grpc.ServicerContext
    ) -> pb.GetBucketResponse:
        name = resource_id(request.name, "buckets")
        with self.db.begin() as connection:
            # A bucket this account may not see is answered like a missing one, so
            # that names cannot be probed.
            if not visible_buckets(connection, current_caller())(name):
                raise NotFoundError(f"buckets/{shown(name)} does not exist")
            row = require_bucket(connection, name)
        return pb.GetBucketResponse(bucket=_message(row))

    def ListBuckets(
        self, request: pb.ListBucketsRequest, context: grpc.ServicerContext
    ) -> pb.ListBucketsResponse:
        offset, limit = page(request.page_size, request.page_token)
        t = tables.buckets
        with self.db.begin() as connection:
            visible = visible_buckets(connection, current_caller())
            rows = [
                dict(r)
                for r in connection.execute(sa.select(t).order_by(t.c.name)).mappings()
                if visible(r["name"])
            ]
        chunk = rows[offset : offset + limit]
        return pb.ListBucketsResponse(
            buckets=[_message(r) for r in chunk],
            next_page_token=next_page_token(offset, limit, len(chunk), len(rows)),
        )

    def DeleteBucket(
        self, request: pb.DeleteBucketRequest, context: grpc.ServicerContext
    ) -> pb.DeleteBucketResponse:
        name = resource_id(request.name, "buckets")
        with self.db.begin() as connection:
            self.db.serialize(connection, AUDIT_TARGET_LOCK)  # not made the target meanwhile
            self.db.serialize(connection, EXPORTERS_LOCK)  # no exporter made to write here
            require_bucket(connection, name)
            target = connection.execute(sa.select(tables.audit_settings.c.target_bucket)).scalar()
            if target == name:
                raise FailedPreconditionError(
                    f"buckets/{name} is the audit log target bucket; choose another target "
                    "before deleting it"
                )
            exporters = tables.exporters
            # (An exporter to an external S3 target keeps its bucket in `external`.)
            writing = (
                connection.execute(
                    sa.select(exporters.c.id)
                    .where(exporters.c.bucket == name)
                    .order_by(exporters.c.id)
                )
                .scalars()
                .all()
            )
            if writing:
                # It failed for good, and every node's spool kept what it had not
                # exported (found by a review helper).
                raise FailedPreconditionError(
                    f"buckets/{name} is where {', '.join(f'exporters/{e}' for e in writing)} "
                    "write; delete them or move them to another bucket first"
                )
            try:
                self.store.delete_bucket(name)
            except BucketNotEmptyError:
                raise FailedPreconditionError(
                    f"buckets/{name} is not empty; delete its objects first"
                ) from None
            except NoSuchBucketError:
                pass  # gone from the store already: forget it here too
            connection.execute(tables.buckets.delete().where(tables.buckets.c.name == name))
        return pb.DeleteBucketResponse()

    def SetObjectImmutability(
        self, request: pb.SetObjectImmutabilityRequest, context: grpc.ServicerContext
    ) -> pb.SetObjectImmutabilityResponse:
        name = resource_id(request.name, "buckets")
        retention = _retention(request.default_retention, "default_retention")
        with self.db.begin() as connection:
            require_bucket(connection, name)
            self.store.enable_object_lock(name, retention)
            connection.execute(
                tables.buckets.update()
                .where(tables.buckets.c.name == name)
                .values(
                    immutable=True,
                    retention_mode=request.default_retention.mode if retention else 0,
                    retention_days=retention.days if retention else 0,
                )
            )
            row = require_bucket(connection, name)
        return pb.SetObjectImmutabilityResponse(bucket=_message(row))
