"""The contract as data, in one place for every distribution: its generated modules,
its services, the exporter's format and compression names, and the methods a caller
may use without a token."""

from auditline.contract._lists import (
    EXPORT_COMPRESSIONS,
    EXPORT_FORMATS,
    FILES,
    OPEN_METHODS,
    SERVICES,
)

__all__ = ["EXPORT_COMPRESSIONS", "EXPORT_FORMATS", "FILES", "OPEN_METHODS", "SERVICES"]
