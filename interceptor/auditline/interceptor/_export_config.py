"""An exporter's configuration, its status, and where its files go."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
from typing import Protocol

from auditline.interceptor._compression import COMPRESSIONS
from auditline.interceptor._formats import FORMATS
from auditline.interceptor._ocsf import OCSF_VERSION, OCSF_VERSIONS

__all__ = [
    "LAKE_PARTITION",
    "PARTITIONINGS",
    "ExporterConfig",
    "ExporterState",
    "ExporterStatus",
    "ObjectWriter",
    "destination_of",
]


class ObjectWriter(Protocol):
    """Where an exporter's files go: one bucket of some object store.

    A writer may also name where it writes, as a string attribute `location` (the
    writers here do): an exporter whose location or prefix changes then begins a log
    of its own there, whose first manifest says where it begins. And it may say
    whether a key is there, `exists(key) -> bool` (the writers here do): an exporter
    that comes to a destination where the spool remembers a log of the node checks
    that the log's last manifest is still there before it goes on with it (the
    bucket may have been emptied and made again)."""

    def put(
        self, key: str, data: bytes, *, retain_until: datetime.datetime | None, mode: str | None
    ) -> None: ...


class ExporterState(enum.Enum):
    WAITING = "WAITING"
    EXPORTING = "EXPORTING"
    ERROR = "ERROR"


MAX_PARQUET_FILE_BYTES = 256 * 1024 * 1024
# A `region=` or `accountId=` partition's value.
LAKE_PARTITION = re.compile(r"[A-Za-z0-9_-]{0,64}")
# How a file's key names its day, by partitioning.
PARTITIONINGS = {"date": "%Y/%m/%d", "hive": "year=%Y/month=%m/day=%d"}


@dataclasses.dataclass(frozen=True)
class ExporterConfig:
    name: str
    format: str = "apievent-json"
    compression: str = "gzip"
    prefix: str = ""
    flush_interval: float = 300.0
    max_file_bytes: int = 2_500_000
    retention_mode: str | None = None  # GOVERNANCE or COMPLIANCE
    retention_days: int = 0
    log_types: frozenset[int] = frozenset()  # empty: every log
    checkpoint_interval: float = 3600.0  # a signed checkpoint at least this often, if idle
    # The day's folders in a file's key: `date` (2026/12/05) or `hive`
    # (year=2026/month=12/day=05, which DuckDB, Athena, Spark and Trino prune on).
    partitioning: str = "date"
    # The OCSF version of the `ocsf-*` formats' records (1.1.0: what Security Lake takes).
    ocsf_version: str = OCSF_VERSION
    # The `ocsf-parquet` format's keys: `region=<region>/accountId=<id>/eventDay=…`, the
    # layout of an Amazon Security Lake custom source (whose location is the prefix).
    lake_region: str = ""
    lake_account_id: str = ""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}")
        if self.partitioning not in PARTITIONINGS:
            raise ValueError(f"partitioning must be one of {sorted(PARTITIONINGS)}")
        if self.ocsf_version not in OCSF_VERSIONS:
            raise ValueError(f"ocsf_version must be one of {list(OCSF_VERSIONS)}")
        if self.format == "ocsf-parquet" and not (self.lake_region and self.lake_account_id):
            raise ValueError("the ocsf-parquet format needs a lake region and account id")
        if any(not LAKE_PARTITION.fullmatch(v) for v in (self.lake_region, self.lake_account_id)):
            raise ValueError("a lake region or account id is letters, digits, '-' and '_'")
        if self.max_file_bytes > MAX_PARQUET_FILE_BYTES and self.format == "ocsf-parquet":
            # One row group per file; Security Lake takes row groups of at most 256 MB.
            raise ValueError(f"an ocsf-parquet file is at most {MAX_PARQUET_FILE_BYTES} bytes")
        if self.flush_interval <= 0 or self.max_file_bytes < 1024:
            raise ValueError("flush_interval must be positive and max_file_bytes >= 1024")


@dataclasses.dataclass
class ExporterStatus:
    state: ExporterState = ExporterState.WAITING
    last_error: str = ""
    last_error_time: float = 0.0
    last_success_time: float = 0.0
    watermark: int = 0
    backlog: int = 0
    last_object_key: str = ""
    exported_events: int = 0
    exported_files: int = 0
    errors: int = 0


def destination_of(config: ExporterConfig, writer: ObjectWriter) -> str:
    """Where an exporter's log is: its writer's location (if it names one) and prefix.
    A log is one destination's: moved elsewhere, the exporter begins another."""
    return f"{getattr(writer, 'location', '')}\n{config.prefix}"
