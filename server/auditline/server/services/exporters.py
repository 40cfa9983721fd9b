"""ExporterService: exporters beside the default one, with their live status."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from auditline.audit.v1 import exporter_pb2 as pb
from auditline.audit.v1 import exporter_pb2_grpc
from auditline.errors import AlreadyExistsError, FailedPreconditionError
from auditline.interceptor import Exporter, ExporterConfig, ExporterStatus
from auditline.interceptor._s3 import parse_s3_url
from auditline.server.db import Database, require_row, tables
from auditline.server.exporter_reports import forget_exporter, node_statuses
from auditline.server.objectstore import ObjectStore
from auditline.server.saved_exporters import SavedExporters
from auditline.server.services._common import (
    EXPORTERS_LOCK,
    check_new_id,
    mask_paths,
    next_page_token,
    page,
    resource_id,
    timestamp,
)
from auditline.server.services._exporter_rows import (
    UPDATABLE,
    check_fields,
    destination,
    row_message,
    row_values,
)
from auditline.server.services.buckets import require_bucket

DEFAULT = "default"
_STATES = {
    "WAITING": pb.EXPORTER_STATE_WAITING,
    "EXPORTING": pb.EXPORTER_STATE_EXPORTING,
    "ERROR": pb.EXPORTER_STATE_ERROR,
}


class ExporterServicer(exporter_pb2_grpc.ExporterServiceServicer):
    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        saved: SavedExporters,
        clock: Callable[[], float],
        default_target: Callable[[Connection], str],
        default_config: ExporterConfig,
        node_id: str,
        export_target: str = "",
    ) -> None:
        self.db = db
        self.node_id = node_id
        self.store = store
        self.saved = saved
        self.clock = clock
        self.default_target = default_target
        # As the flags set it (the default exporter may run in an audit worker).
        self.default_config = default_config
        # `--export-target`: where the default exporter writes instead of the audit
        # target (an S3 URL).
        self.export_target = parse_s3_url(export_target) if export_target else None

    # --- messages -----------------------------------------------------------------------

    @staticmethod
    def _status(exporter: Exporter | None) -> pb.ExporterStatus:
        if exporter is None:
            return pb.ExporterStatus()
        return ExporterServicer._status_of(exporter.status)

    @staticmethod
    def _status_of(s: ExporterStatus) -> pb.ExporterStatus:
        status = pb.ExporterStatus(
            state=_STATES[s.state.value],
            last_error=s.last_error,
            watermark=s.watermark,
            backlog=s.backlog,
            last_object_key=s.last_object_key,
        )
        if s.last_error_time:
            status.last_error_time.CopyFrom(timestamp(s.last_error_time))
        if s.last_success_time:
            status.last_success_time.CopyFrom(timestamp(s.last_success_time))
        return status

    def _message(self, row: dict[str, Any]) -> pb.Exporter:
        message = row_message(row)
        message.status.CopyFrom(self._status(self.saved.running(row["id"])))
        return message

    def _messages(self, rows: list[dict[str, Any]]) -> list[pb.Exporter]:
        reports = node_statuses(self.db, [row["id"] for row in rows])
        messages = []
        in_worker = self.saved.pipeline is None  # the exporters run in an audit worker
        for row in rows:
            message = self._message(row)
            for report in reports[row["id"]]:
                node = message.node_statuses.add(
                    node_id=report.node_id, status=self._status_of(report.status)
                )
                node.report_time.CopyFrom(timestamp(report.reported_at))
                if in_worker and report.node_id == self.node_id:
                    # It runs in this node's audit worker: its status as last reported
                    # (none yet: not known, UNSPECIFIED).
                    message.status.CopyFrom(node.status)
            messages.append(message)
        return messages

    def _default_row(self, connection: Connection) -> dict[str, Any]:
        """The default exporter as the flags set it, writing to the audit target, or
        to `--export-target` (it was shown, and checked against others, at the audit
        target then too; found by a review helper)."""
        config = self.default_config
        bucket, external, prefix = self.default_target(connection), None, config.prefix
        if self.export_target is not None:
            url = self.export_target
            bucket, prefix = "", url.prefix + config.prefix
            external = {
                "endpoint": url.endpoint or "",
                "region": url.region or "",
                "bucket": url.bucket,
            }
        return {
            "id": DEFAULT,
            "display_name": "default (set by flags)",
            "bucket": bucket,
            "external": external,
            "prefix": prefix,
            "format": config.format,
            "compression": config.compression,
            "flush_interval": config.flush_interval,
            "max_file_bytes": config.max_file_bytes,
            "retention_mode": config.retention_mode or "",
            "retention_days": config.retention_days,
            "log_types": sorted(config.log_types),
            "partitioning": config.partitioning,
            "ocsf_version": config.ocsf_version,
            "lake_region": config.lake_region,
            "lake_account_id": config.lake_account_id,
        }

    # --- validation ---------------------------------------------------------------------

    def _check(self, row: dict[str, Any]) -> None:
        """Everything about `row`, its target reached: before the transaction that
        writes it (which checks its fields and destination again)."""
        check_fields(row)
        self._check_destination(row)
        self._check_target(row)

    def _check_target(self, row: dict[str, Any]) -> None:
        """The target answers (that a bucket of this store exists, `_check_destination`
        has checked just before)."""
        external = row.get("external")
        if external:
            try:
                self.saved.external_writer(external).check()
            except Exception as exc:
                raise FailedPreconditionError(
                    f"the external target bucket {external['bucket']} cannot be reached: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            return
        bucket = row["bucket"]
        try:
            self.store.usage(bucket)
        except Exception as exc:
            raise FailedPreconditionError(
                f"buckets/{bucket} cannot be reached in the object store: {exc}"
            ) from None

    def _check_destination(self, row: dict[str, Any], connection: Connection | None = None) -> None:
        """No two exporters write to one bucket and prefix: they would write files and
        manifests of the same names, and the second could never commit (or, on S3,
        would hide the first's under a new version). Given the transaction that
        writes `row` (serialized on EXPORTERS_LOCK), the check holds when it commits."""
        if connection is None:
            with self.db.begin() as reading:
                self._check_destination(row, reading)
            return
        if not row.get("external"):
            # And its bucket is there when it commits: one deleted meanwhile (on another
            # replica) left an exporter failing for good, which held every spool.
            require_bucket(connection, row["bucket"])
        others = [dict(r) for r in connection.execute(sa.select(tables.exporters)).mappings()]
        for other in [self._default_row(connection), *others]:
            if other["id"] == row["id"]:
                continue
            if other["id"] != DEFAULT and other["display_name"] == row["display_name"]:
                return  # the name is taken: that is what the client is told (ALREADY_EXISTS)
            if destination(other) == destination(row):
                raise FailedPreconditionError(
                    f"exporters/{other['id']} already writes to this bucket and prefix: "
                    "give this exporter another prefix"
                )

    def check_default_target(self, bucket: str, connection: Connection) -> None:
        """The audit target moved to `bucket` moves the default exporter there: refused
        where another exporter writes under the same prefix already (found by a review
        helper: only the reverse was refused, and the bucket's log no longer verified).
        Called in the transaction that moves it, which holds EXPORTERS_LOCK: an
        exporter made at once on another replica could pass its own check."""
        self._check_destination(self._default_row(connection) | {"bucket": bucket}, connection)

    # --- methods ------------------------------------------------------------------------

    def CreateExporter(
        self, request: pb.CreateExporterRequest, context: grpc.ServicerContext
    ) -> pb.CreateExporterResponse:
        check_new_id(request.exporter_id, "exporter_id")
        if request.exporter_id == DEFAULT:
            raise AlreadyExistsError("exporters/default is the exporter set by flags")
        now = self.clock()
        row = {
            "id": request.exporter_id or uuid.uuid4().hex[:12],
            **row_values(request.exporter),
            "created_at": now,
            "updated_at": now,
        }
        self._check(row)
        try:
            with self.db.begin() as connection:
                # Checked again where it is written: two creates at once on two
                # replicas both passed the check (found by a review helper).
                self.db.serialize(connection, EXPORTERS_LOCK)
                self._check_destination(row, connection)
                connection.execute(tables.exporters.insert().values(**row))
        except IntegrityError:
            raise AlreadyExistsError("an exporter with this display name or id exists") from None
        self.saved.run(row)
        return pb.CreateExporterResponse(exporter=self._messages([row])[0])

    def row(self, name: str) -> dict[str, Any]:
        """The definition of the exporter `exporters/{id}` (the default one's from the
        flags); NOT_FOUND when there is none."""
        exporter_id = resource_id(name, "exporters")
        with self.db.begin() as connection:
            if exporter_id == DEFAULT:
                return self._default_row(connection)
            return require_row(connection, tables.exporters.c.id, exporter_id, name)

    def GetExporter(
        self, request: pb.GetExporterRequest, context: grpc.ServicerContext
    ) -> pb.GetExporterResponse:
        return pb.GetExporterResponse(exporter=self._messages([self.row(request.name)])[0])

    def ListExporters(
        self, request: pb.ListExportersRequest, context: grpc.ServicerContext
    ) -> pb.ListExportersResponse:
        offset, limit = page(request.page_size, request.page_token)
        with self.db.begin() as connection:
            saved = [
                dict(r)
                for r in connection.execute(
                    sa.select(tables.exporters).order_by(tables.exporters.c.created_at)
                ).mappings()
            ]
            rows = [self._default_row(connection), *saved]
        chunk = rows[offset : offset + limit]
        return pb.ListExportersResponse(
            exporters=self._messages(chunk),
            next_page_token=next_page_token(offset, limit, len(chunk), len(rows)),
        )

    def UpdateExporter(
        self, request: pb.UpdateExporterRequest, context: grpc.ServicerContext
    ) -> pb.UpdateExporterResponse:
        row = self.row(request.exporter.name)
        if row["id"] == DEFAULT:
            raise FailedPreconditionError("exporters/default is set by the server's flags")
        paths = mask_paths(request.update_mask, request.exporter, UPDATABLE)
        changes = row_values(request.exporter, set(paths))
        self._check({**row, **changes})
        try:
            with self.db.begin() as connection:
                # The row as it stands now, the masked fields merged into it and
                # checked again: two updates at once of other fields each wrote back
                # the whole row as it had read it, and one was lost; an update racing
                # a delete answered OK (found by a review helper).
                self.db.serialize(connection, EXPORTERS_LOCK)
                current = require_row(
                    connection, tables.exporters.c.id, row["id"], request.exporter.name
                )
                new = {**current, **changes, "updated_at": self.clock()}
                check_fields(new)
                self._check_destination(new, connection)
                connection.execute(
                    tables.exporters.update()
                    .where(tables.exporters.c.id == row["id"])
                    .values(**{k: v for k, v in new.items() if k != "id"})
                )
        except IntegrityError:
            raise AlreadyExistsError("another exporter has this display name") from None
        self.saved.run(new)
        return pb.UpdateExporterResponse(exporter=self._messages([new])[0])

    def DeleteExporter(
        self, request: pb.DeleteExporterRequest, context: grpc.ServicerContext
    ) -> pb.DeleteExporterResponse:
        row = self.row(request.name)
        if row["id"] == DEFAULT:
            raise FailedPreconditionError("exporters/default is set by the server's flags")
        with self.db.begin() as connection:
            connection.execute(tables.exporters.delete().where(tables.exporters.c.id == row["id"]))
        self.saved.remove(row["id"])
        forget_exporter(self.db, row["id"])
        return pb.DeleteExporterResponse()


__all__ = ["ExporterServicer"]
