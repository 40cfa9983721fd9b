"""Reading an exported log back: every event of every data file at a location (a
directory or a bucket), in any format and compression, as its `ApiEvent` document —
and an event as the OCSF record the `ocsf-json` format writes. For tools that work on
what was exported (back-testing detections, ad-hoc queries), as the verifier does."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from auditline.interceptor._compression import decompress
from auditline.interceptor._keys import data_file
from auditline.interceptor._leaf import read_line, timestamp_nanoseconds
from auditline.interceptor._locations import Location
from auditline.interceptor._ocsf import OCSF_VERSION, ocsf_from_document

__all__ = ["ExportedEvent", "ocsf_record", "read_exported"]

_EPOCH = "1970-01-01T00:00:00Z"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportedEvent:
    key: str  # the file it was read from
    format: str  # apievent-json, ocsf-json or ocsf-parquet
    document: dict[str, Any]  # the event as protobuf's JSON mapping of ApiEvent


def read_exported(location: Location) -> Iterator[ExportedEvent]:
    """Every event of every data file at `location` (integrity objects skipped), file by
    file in key order; `ValueError` names a line that is not an event of its format."""
    for key in sorted(location.list_keys()):
        file = data_file(key)  # as the verifier and queries tell one
        if file is None:
            continue
        format_name = file.format
        data = location.read(key)
        if data is None:
            continue
        for number, line in enumerate(decompress(key, data).splitlines(), 1):
            if line.strip():
                try:
                    document = read_line(format_name, line)
                except ValueError as error:
                    raise ValueError(f"{key}: line {number}: {error}") from None
                yield ExportedEvent(key=key, format=format_name, document=document)


def ocsf_record(document: dict[str, Any], version: str = OCSF_VERSION) -> dict[str, Any]:
    """The OCSF record (of `version`) the `ocsf-json` format writes of an event."""
    return ocsf_from_document(
        document,
        timestamp_nanoseconds(document.get("Request", {}).get("RequestTime", _EPOCH)),
        timestamp_nanoseconds(document.get("Response", {}).get("ResponseTime", _EPOCH)),
        version,
    )
