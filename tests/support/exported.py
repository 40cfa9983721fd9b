"""Reading the audit files `auditline serve` exported to its filesystem object store."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import zstandard

from auditline.interceptor._leaf import read_line
from auditline.interceptor._ocsf_parquet import parquet_lines

DEFAULT_BUCKET = "auditline-audit-logs"


def exported_files(data_dir: Path, bucket: str = DEFAULT_BUCKET) -> list[Path]:
    """The exported event files (not the integrity objects beside them)."""
    root = data_dir / "objects" / bucket / "objects"
    return sorted(
        p for p in root.rglob("*") if p.is_file() and "integrity" not in p.relative_to(root).parts
    )


def read_lines(name: str, data: bytes) -> list[dict[str, Any]]:
    """A file's records; a Parquet file's rows as the product reads them back (its free-
    form columns are JSON text), checked apart in tests/interceptor/test_ocsf_parquet.py."""
    if name.endswith(".parquet"):
        data = parquet_lines(data)
    elif name.endswith(".gz"):
        data = gzip.decompress(data)
    elif name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def exported_records(data_dir: Path, bucket: str = DEFAULT_BUCKET) -> list[dict[str, Any]]:
    """Every record of every exported file, as written (either format), file by file."""
    return [
        record
        for path in exported_files(data_dir, bucket)
        for record in read_lines(path.name, path.read_bytes())
    ]


def event_of(record: dict[str, Any]) -> dict[str, Any]:
    """The `ApiEvent` of an apievent-json record, in whichever of the document's shapes
    its log is written (`ApiEvent`, the IAM structure, the console structure)."""
    return read_line("apievent-json", json.dumps(record).encode())


def exported_events(data_dir: Path, bucket: str = DEFAULT_BUCKET) -> list[dict[str, Any]]:
    """Every exported `ApiEvent` (apievent-json files), in sequence order."""
    events = [
        event_of(record)
        for path in exported_files(data_dir, bucket)
        for record in read_lines(path.name, path.read_bytes())
    ]
    return sorted(events, key=lambda e: int(e["Sequence"]))
