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
from auditline.contract import (
    EXPORT_COMPRESSIONS,
    EXPORT_FORMATS,
    EXPORT_OCSF_VERSIONS,
    EXPORT_PARTITIONINGS,
)
from auditline.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError
from auditline.interceptor import LAKE_PARTITION, Exporter, ExporterConfig, ExporterStatus
from auditline.interceptor._s3 import parse_s3_url
from auditline.server.db import Database, require_row, tables
from auditline.server.exporter_reports import forget_exporter, node_statuses
from auditline.server.objectstore import ObjectStore
from auditline.server.saved_exporters import SavedExporters, config_of
from auditline.server.services._common import (
    EXPORTERS_LOCK,
    bucket_id,
    check_display_name,
    check_new_id,
    mask_paths,
    next_page_token,
    page,
    resource_id,
    timestamp,
)
from auditline.server.services.buckets import require_bucket

DEFAULT = "default"
# Unset means the default the contract documents.
_FORMATS = {pb.OUTPUT_FORMAT_UNSPECIFIED: "apievent-json", **EXPORT_FORMATS}
_COMPRESSIONS = {pb.COMPRESSION_UNSPECIFIED: "gzip", **EXPORT_COMPRESSIONS}
_PARTITIONINGS = {pb.PARTITIONING_UNSPECIFIED: "date", **EXPORT_PARTITIONINGS}
_OCSF_VERSIONS = {pb.OCSF_VERSION_UNSPECIFIED: "1.8.0", **EXPORT_OCSF_VERSIONS}
_MODES = {
    pb.OBJECT_LOCK_MODE_UNSPECIFIED: "",
    pb.OBJECT_LOCK_MODE_GOVERNANCE: "GOVERNANCE",
    pb.OBJECT_LOCK_MODE_COMPLIANCE: "COMPLIANCE",
}
_STATES = {
    "WAITING": pb.EXPORTER_STATE_WAITING,
    "EXPORTING": pb.EXPORTER_STATE_EXPORTING,
    "ERROR": pb.EXPORTER_STATE_ERROR,
}
UPDATABLE = (
    "display_name",
    "bucket",
    "external_s3",
    "prefix",
    "format",
    "compression",
    "flush_interval",
    "max_file_bytes",
    "retention_mode",
    "retention_days",
    "log_types",
    "partitioning",
    "ocsf_version",
    "lake_region",
    "lake_account_id",
)


def _reverse(mapping: dict[int, str], value: str) -> int:
    return next(number for number, name in mapping.items() if name == value and number)


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

    def _message(self, row: dict[str, Any]) -> pb.Exporter:
        exporter = pb.Exporter(
            name=f"exporters/{row['id']}",
            display_name=row["display_name"],
            prefix=row["prefix"],
            format=_reverse(_FORMATS, row["format"]),  # type: ignore[arg-type]
            compression=_reverse(_COMPRESSIONS, row["compression"]),  # type: ignore[arg-type]
            max_file_bytes=row["max_file_bytes"],
            retention_mode=_reverse(_MODES, row["retention_mode"]) if row["retention_mode"] else 0,  # type: ignore[arg-type]
            retention_days=row["retention_days"],
            log_types=row["log_types"],
            partitioning=_reverse(_PARTITIONINGS, row["partitioning"]),  # type: ignore[arg-type]
            ocsf_version=_reverse(_OCSF_VERSIONS, row["ocsf_version"]),  # type: ignore[arg-type]
            lake_region=row["lake_region"],
            lake_account_id=row["lake_account_id"],
            status=self._status(self.saved.running(row["id"])),
        )
        exporter.flush_interval.FromMilliseconds(int(row["flush_interval"] * 1000))
        if row["external"]:
            external = row["external"]
            exporter.external_s3.CopyFrom(
                pb.ExternalS3Target(
                    endpoint=external["endpoint"],
                    region=external["region"],
                    bucket=external["bucket"],
                )
            )
        else:
            exporter.bucket = row["bucket"]
        if row.get("created_at"):
            exporter.create_time.CopyFrom(timestamp(row["created_at"]))
            exporter.update_time.CopyFrom(timestamp(row["updated_at"]))
        return exporter

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

    def _values(self, exporter: pb.Exporter, paths: set[str] | None = None) -> dict[str, Any]:
        values: dict[str, Any] = {
            "display_name": exporter.display_name,
            "prefix": exporter.prefix,
            "format": _FORMATS.get(exporter.format),
            "compression": _COMPRESSIONS.get(exporter.compression),
            "flush_interval": (
                exporter.flush_interval.ToMilliseconds() / 1000
                if exporter.HasField("flush_interval")
                else 300.0
            ),
            "max_file_bytes": exporter.max_file_bytes or 2_500_000,
            "retention_mode": _MODES.get(exporter.retention_mode, ""),
            "retention_days": exporter.retention_days,
            "log_types": sorted(set(exporter.log_types)),
            "partitioning": _PARTITIONINGS.get(exporter.partitioning),
            "ocsf_version": _OCSF_VERSIONS.get(exporter.ocsf_version),
            "lake_region": exporter.lake_region,
            "lake_account_id": exporter.lake_account_id,
        }
        target = exporter.WhichOneof("target")
        if target == "bucket":
            bucket = bucket_id(exporter.bucket, "exporter.bucket") if exporter.bucket else ""
            values |= {"bucket": bucket, "external": None}
        elif target == "external_s3":
            external = exporter.external_s3
            if external.access_key_id or external.secret_access_key:
                raise InvalidArgumentError.field(
                    "exporter.external_s3",
                    "credentials come from the server's AWS configuration; leave the keys empty",
                )
            values |= {
                "bucket": "",
                "external": {
                    "endpoint": external.endpoint,
                    "region": external.region,
                    "bucket": external.bucket,
                },
            }
        if paths is not None:
            if "bucket" in paths or "external_s3" in paths:
                paths |= {"bucket", "external"}
            values = {k: v for k, v in values.items() if k in paths}
        return values

    def _check(self, row: dict[str, Any]) -> None:
        """Everything about `row`, its target reached: before the transaction that
        writes it (which checks its fields and destination again, `_check_fields`)."""
        self._check_fields(row)
        self._check_destination(row)
        self._check_target(row)

    @staticmethod
    def _check_fields(row: dict[str, Any]) -> None:
        """What `row` says, alone (no I/O): run again on the row an update merges into
        the current one (two updates at once, each valid, could merge into one that
        is not: an ocsf-parquet format and an empty lake region)."""
        check_display_name(row["display_name"], "exporter.display_name")
        if row["format"] is None:
            raise InvalidArgumentError.field("exporter.format", "is not a known format")
        if row["compression"] is None:
            raise InvalidArgumentError.field("exporter.compression", "is not known")
        if row["partitioning"] is None:
            raise InvalidArgumentError.field("exporter.partitioning", "is not known")
        if row["ocsf_version"] is None:
            raise InvalidArgumentError.field("exporter.ocsf_version", "is not known")
        for field in ("lake_region", "lake_account_id"):
            if row["format"] == "ocsf-parquet" and not row[field]:
                raise InvalidArgumentError.field(
                    f"exporter.{field}", "is required by OUTPUT_FORMAT_OCSF_PARQUET"
                )
            if not LAKE_PARTITION.fullmatch(row[field]):
                raise InvalidArgumentError.field(
                    f"exporter.{field}", "must be up to 64 letters, digits, '-' or '_'"
                )
        prefix = row["prefix"]
        if prefix and (not prefix.endswith("/") or {"", ".", ".."} & set(prefix.split("/")[:-1])):
            # Folders, so that the files can be found again under it (QueryEvents).
            raise InvalidArgumentError.field(
                "exporter.prefix", "must be empty or folders ending in '/', like audit/"
            )
        try:  # the exporter's own rules (an ocsf-parquet file's size, ...)
            config_of(row)
        except ValueError as error:
            raise InvalidArgumentError(str(error)) from None
        if row["flush_interval"] <= 0:
            raise InvalidArgumentError.field("exporter.flush_interval", "must be positive")
        if row["max_file_bytes"] < 1024:
            raise InvalidArgumentError.field("exporter.max_file_bytes", "must be at least 1024")
        if not 0 <= row["retention_days"] <= 36500:
            raise InvalidArgumentError.field("exporter.retention_days", "must be 0 to 36500")
        if row["retention_days"] and not row["retention_mode"]:
            raise InvalidArgumentError.field(
                "exporter.retention_mode", "is required with retention_days"
            )
        external = row.get("external")
        if external and not external["bucket"]:
            raise InvalidArgumentError.field("exporter.external_s3.bucket", "is required")
        if not external and not row.get("bucket", ""):
            raise InvalidArgumentError.field(
                "exporter.bucket", "a target (bucket or external_s3) is required"
            )

    def _check_target(self, row: dict[str, Any]) -> None:
        """The target exists and answers."""
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
        with self.db.begin() as connection:
            require_bucket(connection, bucket)
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
        others = [dict(r) for r in connection.execute(sa.select(tables.exporters)).mappings()]
        for other in [self._default_row(connection), *others]:
            if other["id"] == row["id"]:
                continue
            if other["id"] != DEFAULT and other["display_name"] == row["display_name"]:
                return  # the name is taken: that is what the client is told (ALREADY_EXISTS)
            if _destination(other) == _destination(row):
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
            **self._values(request.exporter),
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
        changes = self._values(request.exporter, set(paths))
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
                self._check_fields(new)
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


def _destination(row: dict[str, Any]) -> tuple[str, str, str]:
    """Where an exporter writes: (endpoint, bucket, prefix); "" for the object store's
    own endpoint."""
    external = row.get("external")
    if external:
        return (str(external.get("endpoint", "")), str(external["bucket"]), row["prefix"])
    return ("", str(row.get("bucket", "")), row["prefix"])
