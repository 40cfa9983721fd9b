"""The lists of the contract that client, server and tests used to write each."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from auditline.account.v1 import (
    auth_pb2,
    bucket_pb2,
    permission_pb2,
    service_account_pb2,
    usage_pb2,
)
from auditline.audit.v1 import (
    audit_log_pb2,
    event_pb2,
    exporter_pb2,
    options_pb2,
    settings_pb2,
)

# Every file of proto/ (a test checks none is missing); importing them fills the
# default descriptor pool.
FILES: tuple[ModuleType, ...] = (
    auth_pb2,
    bucket_pb2,
    permission_pb2,
    service_account_pb2,
    usage_pb2,
    audit_log_pb2,
    event_pb2,
    exporter_pb2,
    options_pb2,
    settings_pb2,
)

# Every service of the contract, in the files' order.
SERVICES: tuple[ServiceDescriptor, ...] = tuple(
    service for file in FILES for service in file.DESCRIPTOR.services_by_name.values()
)

# Full method names (`/package.Service/Method`) that need no bearer token: the ways
# to get one. The server's guard admits them; the client sends no token on them.
OPEN_METHODS: frozenset[str] = frozenset(
    {
        "/auditline.account.v1.AuthService/Authenticate",
        "/auditline.account.v1.AuthService/ValidateToken",
    }
)


def _enum_names(enum: str, prefix: str) -> dict[Any, str]:
    """{number: name} of an enum's set values: `OUTPUT_FORMAT_OCSF_JSON` → `ocsf-json`."""
    return {
        value.number: value.name.removeprefix(prefix).lower().replace("_", "-")
        for value in exporter_pb2.DESCRIPTOR.enum_types_by_name[enum].values
        if not value.name.endswith("_UNSPECIFIED")
    }


# The exporter's formats and compressions by their names (what the CLI, the config
# and the interceptor's `ExporterConfig` say), from the contract's enums.
EXPORT_FORMATS: dict[exporter_pb2.OutputFormat.ValueType, str] = _enum_names(
    "OutputFormat", "OUTPUT_FORMAT_"
)
EXPORT_COMPRESSIONS: dict[exporter_pb2.Compression.ValueType, str] = _enum_names(
    "Compression", "COMPRESSION_"
)
EXPORT_PARTITIONINGS: dict[exporter_pb2.Partitioning.ValueType, str] = _enum_names(
    "Partitioning", "PARTITIONING_"
)
# `OCSF_VERSION_1_1_0` → `1.1.0`.
EXPORT_OCSF_VERSIONS: dict[exporter_pb2.OcsfVersion.ValueType, str] = {
    number: name.replace("-", ".")
    for number, name in _enum_names("OcsfVersion", "OCSF_VERSION_").items()
}
