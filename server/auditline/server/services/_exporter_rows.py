"""An exporter's row in the database: made from its API message (`row_values`),
checked alone (`check_fields`), where it writes (`destination`), and shown again
(`row_message`). ExporterService checks the rest (destinations taken, the target
reachable) where it writes the row."""

from __future__ import annotations

from typing import Any

from auditline.audit.v1 import exporter_pb2 as pb
from auditline.contract import (
    EXPORT_COMPRESSIONS,
    EXPORT_FORMATS,
    EXPORT_OCSF_VERSIONS,
    EXPORT_PARTITIONINGS,
)
from auditline.errors import InvalidArgumentError
from auditline.interceptor import LAKE_PARTITION
from auditline.server.saved_exporters import config_of
from auditline.server.services._common import bucket_id, check_display_name, timestamp

__all__ = ["UPDATABLE", "check_fields", "destination", "row_message", "row_values"]

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


def row_values(exporter: pb.Exporter, paths: set[str] | None = None) -> dict[str, Any]:
    """The row's values an Exporter message gives (those of `paths` only, for an
    update); unknown enum values are None, for `check_fields` to name."""
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


def check_fields(row: dict[str, Any]) -> None:
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


def row_message(row: dict[str, Any]) -> pb.Exporter:
    """The row as an Exporter message, without its status."""
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


def destination(row: dict[str, Any]) -> tuple[str, str, str]:
    """Where an exporter writes: (endpoint, bucket, prefix); "" for the object store's
    own endpoint."""
    external = row.get("external")
    if external:
        return (str(external.get("endpoint", "")), str(external["bucket"]), row["prefix"])
    return ("", str(row.get("bucket", "")), row["prefix"])
