"""The exporters defined through `ExporterService`, running on this node's pipeline.

Rows in the `exporters` table are the definitions; this module turns a row into a
running `Exporter` (its config and its writer), restarts it when the row changes and
stops it when the row goes. `services/exporters.py` serves the API over these rows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
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

log = logging.getLogger("auditline.server")


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
    """The saved exporters on `pipeline`. Without one (`auditline serve
    --audit-process worker`) the pipeline runs in the audit worker, whose own
    `SavedExporters` follows the database: here, starting or stopping one only tells
    it (`changed`)."""

    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        pipeline: Pipeline | None = None,
        *,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.db = db
        self.store = store
        self.pipeline = pipeline
        self._changed = changed  # without a pipeline: the one that follows is told
        # What runs here: exporter id → its row's `updated_at` when it was started.
        self._running: dict[str, float] = {}
        self._lock = threading.Lock()

    def start_all(self) -> None:
        """Start the exporters saved by earlier runs, and forget the watermark of any
        deleted meanwhile (on another replica, while this one was down): the spool
        frees only what every watermark has passed, so such a one kept every later
        event until the spool was full and every call refused (found by a review
        helper). Call it once the pipeline runs its other exporters."""
        self.reconcile()
        if self.pipeline is None:
            return
        with self.db.begin() as connection:
            saved = set(connection.execute(sa.select(tables.exporters.c.id)).scalars())
        for name in self.pipeline.spool.store.exporters():
            if name not in saved and name not in self.pipeline.exporters:
                log.info("exporter %s was deleted while this node was down: forgotten", name)
                self.pipeline.remove_exporter(name, forget=True)

    def reconcile(self) -> None:
        """Run exactly the saved exporters, as saved: the ones another replica created
        or changed are started or restarted, the ones it deleted stopped."""
        with self.db.begin() as connection:
            rows = [dict(r) for r in connection.execute(sa.select(tables.exporters)).mappings()]
        with self._lock:
            for row in rows:
                if self._running.get(row["id"]) != row["updated_at"]:
                    self._run(row)
            for exporter_id in set(self._running) - {row["id"] for row in rows}:
                self._remove(exporter_id)

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
        with self._lock:
            self._run(row)

    def _run(self, row: dict[str, Any]) -> None:
        if self.pipeline is None:
            self._changed()
            return
        try:
            self.pipeline.add_exporter(config_of(row), self.writer(row))
        except Exception:
            # One exporter this replica cannot start (an external bucket it cannot
            # reach) must not stop the others; it is tried again at the next change.
            log.exception("exporter %s could not be started", row["id"])
        self._running[row["id"]] = row["updated_at"]

    def running(self, exporter_id: str) -> Exporter | None:
        return self.pipeline.exporters.get(exporter_id) if self.pipeline is not None else None

    def remove(self, exporter_id: str) -> None:
        """Stop the exporter and forget its watermark: its row is gone."""
        with self._lock:
            self._remove(exporter_id)

    def _remove(self, exporter_id: str) -> None:
        if self.pipeline is None:
            self._changed()
            return
        running = exporter_id in self.pipeline.exporters
        # Its watermark goes once its thread has ended (a batch under way finishes).
        self.pipeline.remove_exporter(exporter_id, forget=True)
        if running:
            log.info("exporter %s stopped: its definition was deleted", exporter_id)
        self._running.pop(exporter_id, None)
