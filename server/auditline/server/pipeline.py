"""Wiring the export pipeline into `auditline serve`: spool, default exporter, target bucket."""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import sqlalchemy as sa

from auditline.interceptor import Exporter, ExporterConfig, ObjectWriter, Spool, instrument
from auditline.interceptor.integrity import Notary
from auditline.server.db import Database, tables
from auditline.server.objectstore import (
    BucketExistsError,
    ObjectLockedError,
    ObjectStore,
    Retention,
    S3Store,
)

__all__ = [
    "AuditPipeline",
    "BucketWriter",
    "audit_settings",
    "ensure_audit_target",
    "external_writer",
]

log = logging.getLogger("auditline.server")


class BucketWriter:
    """An exporter's writer into one bucket of the service's own object store."""

    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self.store = store
        self.bucket = bucket

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


def external_writer(url: str) -> BucketWriter:
    """A writer for `s3://BUCKET?endpoint=URL&region=R`: a bucket outside this service
    (credentials from the standard AWS variables or files). It must exist already."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"an external export target is s3://BUCKET?endpoint=..., not {url!r}")
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    store = S3Store(endpoint=query.get("endpoint"), region=query.get("region"))
    store.usage(parsed.netloc)  # fails now, clearly, when the bucket is missing or unreadable
    return BucketWriter(store, parsed.netloc)


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
    """
    settings = tables.audit_settings
    with db.begin() as connection:
        row = connection.execute(sa.select(settings)).mappings().first()
        if row is not None and row["target_bucket"]:
            return str(row["target_bucket"])
        known = connection.execute(
            sa.select(tables.buckets.c.name).where(tables.buckets.c.name == bucket)
        ).first()
        if known is None:
            # A bucket left by an earlier data directory is reused.
            with contextlib.suppress(BucketExistsError):
                store.create_bucket(
                    bucket,
                    object_lock=True,
                    retention=Retention(retention_mode, retention_days) if retention_days else None,
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


def audit_settings(db: Database) -> tuple[bool, str]:
    """(account audit logs enabled, target bucket) as the settings say now."""
    with db.begin() as connection:
        row = connection.execute(sa.select(tables.audit_settings)).mappings().first()
    if row is None:
        return False, ""
    return bool(row["account_logs_enabled"]), str(row["target_bucket"])


class AuditPipeline:
    """The spool and its exporters, started and stopped with the server."""

    def __init__(
        self,
        spool_path: Path,
        *,
        node_id: str,
        durability: str,
        backpressure: str,
        max_bytes: int,
        reserve_bytes: int | None = None,
        memory_bytes: int = 64 << 20,
        retain_seconds: float = 0.0,
    ) -> None:
        self.spool = Spool(
            spool_path,
            node_id=node_id,
            durability=durability,
            backpressure=backpressure,
            max_bytes=max_bytes,
            reserve_bytes=reserve_bytes,
            max_memory_bytes=memory_bytes,
            retain_seconds=retain_seconds,
        )
        self.node_id = node_id
        self.exporters: dict[str, Exporter] = {}
        # Signs each exporter's checkpoints (set by the server before any exporter).
        self.notary: Notary | None = None

    def add_exporter(self, config: ExporterConfig, writer: ObjectWriter) -> Exporter:
        exporter = Exporter(config, self.spool, writer, node_id=self.node_id, notary=self.notary)
        self.exporters[config.name] = exporter.start()
        return exporter

    def instrument(self) -> None:
        """Publish the pipeline's OpenTelemetry metrics (a no-op without an SDK set up)."""
        instrument(self.spool, lambda: list(self.exporters.values()))

    def stop(self, timeout: float = 30.0) -> None:
        """Flush every exporter (bounded by `timeout`), then close the spool. A count of
        dropped events not yet written is spooled first, so it is exported too."""
        self.spool.flush(timeout, with_drop_marker=True)
        for exporter in self.exporters.values():
            exporter.stop(timeout)
        self.spool.close()
