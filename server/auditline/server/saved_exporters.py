"""The exporters defined through `ExporterService`, running on this node's pipeline.

Rows in the `exporters` table are the definitions; this module turns a row into a
running `Exporter` (its config and its writer), restarts it when the row changes and
stops it when the row goes. `services/exporters.py` serves the API over these rows.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from auditline.interceptor import (
    Exporter,
    ExporterConfig,
    ObjectWriter,
    Pipeline,
    S3Writer,
)
from auditline.server.audit_target import BucketWriter
from auditline.server.db import Database, tables
from auditline.server.objectstore import ObjectStore

__all__ = ["SavedExporters", "config_of"]


def config_of(row: dict[str, Any]) -> ExporterConfig:
    """An exporter's settings from its row."""
    return ExporterConfig(
        name=row["id"],
        format=row["format"],
        compression=row["compression"],
        prefix=row["prefix"],
        flush_interval=row["flush_interval"],
        max_file_bytes=row["max_file_bytes"],
        retention_mode=row["retention_mode"] or None,
        retention_days=row["retention_days"],
        log_types=frozenset(row["log_types"]),
        partitioning=row["partitioning"],
        ocsf_version=row["ocsf_version"],
        lake_region=row["lake_region"],
        lake_account_id=row["lake_account_id"],
    )


class SavedExporters:
    def __init__(self, db: Database, store: ObjectStore, pipeline: Pipeline) -> None:
        self.db = db
        self.store = store
        self.pipeline = pipeline

    def start_all(self) -> None:
        """Start the exporters saved by earlier runs."""
        with self.db.begin() as connection:
            rows = [dict(r) for r in connection.execute(sa.select(tables.exporters)).mappings()]
        for row in rows:
            self.run(row)

    @staticmethod
    def external_writer(external: dict[str, Any]) -> S3Writer:
        """A bucket outside the service; credentials from the server's AWS configuration."""
        return S3Writer(
            external["bucket"],
            endpoint=external["endpoint"] or None,
            region=external["region"] or None,
        )

    def writer(self, row: dict[str, Any]) -> ObjectWriter:
        if row["external"]:
            return self.external_writer(row["external"])
        return BucketWriter(self.store, row["bucket"])

    def run(self, row: dict[str, Any]) -> None:
        """Start the row's exporter, or restart it with the row's new settings."""
        self.pipeline.add_exporter(config_of(row), self.writer(row))

    def running(self, exporter_id: str) -> Exporter | None:
        return self.pipeline.exporters.get(exporter_id)

    def remove(self, exporter_id: str) -> None:
        """Stop the exporter and forget its watermark: its row is gone."""
        self.pipeline.remove_exporter(exporter_id)
        self.pipeline.spool.store.unregister(exporter_id)
