"""`auditline exporter …`: exporters writing the audit log to a bucket."""

from __future__ import annotations

import argparse

from google.protobuf import duration_pb2

from auditline.audit.v1 import exporter_pb2
from auditline.client._client import Client
from auditline.client._command_parsers import SubParsers, add_command, add_group, resource_name
from auditline.client._output import print_deleted, print_message
from auditline.contract import (
    EXPORT_COMPRESSIONS,
    EXPORT_FORMATS,
    EXPORT_OCSF_VERSIONS,
    EXPORT_PARTITIONINGS,
)

__all__ = ["add_exporter_commands"]

_COLUMNS = (
    "name",
    "display_name",
    "bucket",
    "format",
    "compression",
    "status.state",
    "status.backlog",
    "status.last_error",
)
# By name, as the CLI takes them.
_FORMATS = {name: number for number, name in EXPORT_FORMATS.items()}
_COMPRESSIONS = {name: number for number, name in EXPORT_COMPRESSIONS.items()}
_PARTITIONINGS = {name: number for number, name in EXPORT_PARTITIONINGS.items()}
_OCSF_VERSIONS = {name: number for number, name in EXPORT_OCSF_VERSIONS.items()}


def _create(client: Client, args: argparse.Namespace) -> None:
    response = client.exporters.CreateExporter(
        exporter_pb2.CreateExporterRequest(
            exporter_id=args.id or "",
            exporter=exporter_pb2.Exporter(
                display_name=args.name,
                bucket=args.bucket,
                prefix=args.prefix,
                format=_FORMATS[args.format],
                compression=_COMPRESSIONS[args.compression],
                partitioning=_PARTITIONINGS[args.partitioning],
                ocsf_version=_OCSF_VERSIONS[args.ocsf_version],
                lake_region=args.lake_region,
                lake_account_id=args.lake_account_id,
                flush_interval=duration_pb2.Duration(seconds=args.interval),
            ),
        )
    )
    print_message(response.exporter, as_json=args.json, columns=_COLUMNS)


def _list(client: Client, args: argparse.Namespace) -> None:
    response = client.exporters.ListExporters(exporter_pb2.ListExportersRequest(page_size=1000))
    print_message(response, as_json=args.json, rows=response.exporters, columns=_COLUMNS)


def _get(client: Client, args: argparse.Namespace) -> None:
    response = client.exporters.GetExporter(
        exporter_pb2.GetExporterRequest(name=resource_name("exporters", args.id))
    )
    print_message(response.exporter, as_json=args.json, columns=_COLUMNS)


def _delete(client: Client, args: argparse.Namespace) -> None:
    client.exporters.DeleteExporter(
        exporter_pb2.DeleteExporterRequest(name=resource_name("exporters", args.id))
    )
    print_deleted(resource_name("exporters", args.id), as_json=args.json)


def add_exporter_commands(subparsers: SubParsers) -> None:
    """`auditline exporter create|list|get|delete`."""
    exporter = add_group(subparsers, "exporter", "audit log exporters")
    parser = add_command(exporter, "create", _create, "create an exporter")
    parser.add_argument("name")
    parser.add_argument("--id")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--format", choices=sorted(_FORMATS), default="apievent-json")
    parser.add_argument("--compression", choices=sorted(_COMPRESSIONS), default="gzip")
    parser.add_argument("--partitioning", choices=sorted(_PARTITIONINGS), default="date")
    parser.add_argument("--ocsf-version", choices=list(_OCSF_VERSIONS), default="1.8.0")
    parser.add_argument("--lake-region", default="", help="ocsf-parquet: the region= partition")
    parser.add_argument(
        "--lake-account-id", default="", help="ocsf-parquet: the accountId= partition"
    )
    parser.add_argument("--interval", type=int, default=300, help="seconds between files")
    add_command(exporter, "list", _list, "list exporters with their status")
    add_command(exporter, "get", _get, "show an exporter").add_argument("id")
    add_command(exporter, "delete", _delete, "delete an exporter").add_argument("id")
