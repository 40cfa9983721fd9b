"""Where `auditline serve` exports by default: the object-locked audit bucket in the
service's own object store, created on first start and named by the audit settings."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from auditline.server.db import Database, tables
from auditline.server.objectstore import (
    BucketExistsError,
    ObjectLockedError,
    ObjectStore,
    Retention,
)

__all__ = ["AuditTarget", "BucketWriter", "audit_settings", "ensure_audit_target"]

log = logging.getLogger("auditline.server")


class BucketWriter:
    """An exporter's writer into one bucket of the service's own object store."""

    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self.store = store
        self.bucket = bucket
        self.location = f"store://{bucket}"

    def put(
        self, key: str, data: bytes, *, retain_until: datetime.datetime | None, mode: str | None
    ) -> None:
        try:
            self.store.put_object(self.bucket, key, data, retain_until=retain_until, mode=mode)
        except ObjectLockedError:
            # A retried upload of a batch that did reach the store: the same key holds
            # the same bytes (keys are fixed by the batch), so it is done already.
            if self.store.get_object(self.bucket, key) != data:
                raise

    def exists(self, key: str) -> bool:
        return self.store.has_object(self.bucket, key)


def ensure_audit_target(
    db: Database,
    store: ObjectStore,
    bucket: str,
    retention_days: int,
    clock: Callable[[], float],
    retention_mode: str = "GOVERNANCE",
) -> str:
    """On first start: an object-locked bucket for the audit logs, set as the target.

    Returns the target bucket in force (an operator may have chosen another one).
    Replicas starting together on one database: one sets the target, and the others,
    refused by the tables' keys, read it.
    """
    try:
        return _first_target(db, store, bucket, retention_days, clock, retention_mode)
    except IntegrityError:
        target = audit_settings(db).bucket
        if not target:
            raise
        log.info("the audit target %s was set by another replica starting at once", target)
        return target


def _first_target(
    db: Database,
    store: ObjectStore,
    bucket: str,
    retention_days: int,
    clock: Callable[[], float],
    retention_mode: str,
) -> str:
    settings = tables.audit_settings
    with db.begin() as connection:
        row = connection.execute(sa.select(settings)).mappings().first()
        if row is not None and row["target_bucket"]:
            return str(row["target_bucket"])
        known = connection.execute(
            sa.select(tables.buckets.c.name).where(tables.buckets.c.name == bucket)
        ).first()
        if known is None:
            try:
                store.create_bucket(
                    bucket,
                    object_lock=True,
                    retention=Retention(mode=retention_mode, days=retention_days)
                    if retention_days
                    else None,
                )
            except BucketExistsError:
                # Adopted, and said so: a bucket left by an earlier state (a data
                # directory or database since removed) keeps its files.
                log.warning(
                    "the audit bucket %s exists in the object store already: adopted", bucket
                )
            connection.execute(
                tables.buckets.insert().values(
                    name=bucket,
                    immutable=True,
                    retention_mode=(2 if retention_mode == "COMPLIANCE" else 1)
                    if retention_days
                    else 0,
                    retention_days=retention_days,
                    audit_logging=False,
                    created_at=clock(),
                )
            )
        connection.execute(settings.delete())
        connection.execute(
            settings.insert().values(
                id=1,
                account_logs_enabled=True,
                target_bucket=bucket,
                updated_at=clock(),
                updated_by="auditline serve (first start)",
            )
        )
    log.info("account audit logs go to the object-locked bucket %s", bucket)
    return bucket


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditTarget:
    """Where the audit settings send account audit logs now."""

    enabled: bool  # account audit logs are on (the settings log always is)
    bucket: str  # "" before the first start has set one
    # When the settings were last changed (ns; 0: never, or not known). Not part of
    # what they are: two reads of unchanged settings are equal.
    changed_ns: int = dataclasses.field(default=0, compare=False)


def audit_settings(db: Database, connection: Connection | None = None) -> AuditTarget:
    """The audit target as the settings say now (in `connection`'s transaction, when
    given)."""
    if connection is None:
        with db.begin() as reading:
            return audit_settings(db, reading)
    row = connection.execute(sa.select(tables.audit_settings)).mappings().first()
    if row is None:
        return AuditTarget(enabled=False, bucket="")
    return AuditTarget(
        enabled=bool(row["account_logs_enabled"]),
        bucket=str(row["target_bucket"]),
        changed_ns=int(float(row["updated_at"]) * 1e9),
    )
