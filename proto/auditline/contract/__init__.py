"""The contract as data, in one place for every distribution: its generated modules,
its services, the exporter's format, compression, partitioning and OCSF version
names, and the methods a caller may use without a token."""

from auditline.contract._lists import (
    EXPORT_COMPRESSIONS,
    EXPORT_FORMATS,
    EXPORT_OCSF_VERSIONS,
    EXPORT_PARTITIONINGS,
    FILES,
    OPEN_METHODS,
    SERVICES,
)

__all__ = [
    "EXPORT_COMPRESSIONS",
    "EXPORT_FORMATS",
    "EXPORT_OCSF_VERSIONS",
    "EXPORT_PARTITIONINGS",
    "FILES",
    "OPEN_METHODS",
    "SERVICES",
]
