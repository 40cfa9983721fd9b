"""QueryEvents: SQL over an exporter's files (`auditline events query` through the API).

The query itself is the interceptor's (`query_exported`: DuckDB over the files, with a
connection that can read nothing else). What the service adds is the bounds that let
any auditor run one on a serving node: one query at a time per node, DuckDB on one
thread with a memory cap, a byte limit on the files read, a timeout that is the
smaller of the server's and the call's deadline, and a response of at most 1 MiB.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlencode

from google.protobuf import struct_pb2

from auditline.audit.v1 import audit_log_pb2 as pb
from auditline.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
)
from auditline.interceptor import (
    LocalDirectory,
    Location,
    QueryError,
    QueryLimitError,
    QueryResult,
    S3Location,
    query_exported,
)
from auditline.server.objectstore import FilesystemStore, ObjectStore
from auditline.server.s3_store import S3Store
from auditline.server.services._common import checked_time, page_limit
from auditline.server.services.exporters import DEFAULT

__all__ = ["ExportedLogQueries", "QueryLimits", "exporter_location"]

DEFAULT_EXPORTER = f"exporters/{DEFAULT}"
# A response stays well under the 4 MB a gRPC client takes by default.
RESPONSE_BYTES = 1 << 20
# What a double (and so a JSON reader) holds exactly; larger integers go as text.
_EXACT_INTEGER = 2**53


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueryLimits:
    timeout: float
    max_bytes: int
    memory_bytes: int


def exporter_location(row: dict[str, Any], store: ObjectStore, export_target: str) -> Location:
    """Where the exporter of `row` (`ExporterServicer.row`) writes, to read back."""
    if row["id"] == DEFAULT and export_target:
        return S3Location.from_url(export_target)
    prefix: str = row["prefix"]
    if row["external"]:
        external = row["external"]
        query = {k: external[k] for k in ("endpoint", "region") if external[k]}
        return S3Location.from_url(f"s3://{external['bucket']}/{prefix}?{urlencode(query)}")
    if isinstance(store, FilesystemStore):
        return LocalDirectory(store.root / row["bucket"] / "objects" / prefix)
    if isinstance(store, S3Store):
        return S3Location(row["bucket"], prefix, store.client)
    raise UnavailableError(f"the files of a {type(store).__name__} store cannot be queried")


class ExportedLogQueries:
    def __init__(
        self,
        *,
        locate: Callable[[str], Location],
        limits: QueryLimits,
    ) -> None:
        self.locate = locate  # an exporter's resource name → its files
        self.limits = limits
        self._running = threading.Lock()

    def run(
        self, request: pb.QueryEventsRequest, time_remaining: float | None
    ) -> pb.QueryEventsResponse:
        if not request.sql.strip():
            raise InvalidArgumentError.field("sql", "is required")
        max_rows = page_limit(request.max_rows, default=100, field="max_rows")
        location = self.locate(request.exporter or DEFAULT_EXPORTER)
        timeout = self.limits.timeout
        by_deadline = time_remaining is not None and time_remaining < timeout
        if time_remaining is not None:
            timeout = max(min(timeout, time_remaining), 0.001)
        # DuckDB takes the cores and memory it is given: one query at a time keeps a
        # node's serving to one core and one memory cap at most.
        if not self._running.acquire(blocking=False):
            raise ResourceExhaustedError("another query is running on this node; try again")
        try:
            result = query_exported(
                location,
                request.sql,
                since=_time(request, "since_time"),
                until=_time(request, "until_time"),
                max_rows=max_rows,
                max_bytes=self.limits.max_bytes,
                timeout=timeout,
                threads=1,
                memory_bytes=self.limits.memory_bytes,
                # Twice what a response holds: enough to fill it, however it is cut.
                max_result_bytes=2 * RESPONSE_BYTES,
            )
        except QueryLimitError as error:
            if by_deadline and error.limit == "time":
                raise DeadlineExceededError(
                    "the call's deadline came before the query's end"
                ) from None
            raise ResourceExhaustedError(str(error)) from None
        except QueryError as error:
            raise InvalidArgumentError.field("sql", str(error)) from None
        except OSError as error:
            # Its reason, not its text: that names paths on the node.
            reason = error.strerror or type(error).__name__
            raise UnavailableError(f"the exporter's files cannot be read: {reason}") from None
        finally:
            self._running.release()
        return _response(result)


def _time(
    request: pb.QueryEventsRequest, field: Literal["since_time", "until_time"]
) -> datetime.datetime | None:
    stamp = checked_time(request, field)
    return None if stamp is None else stamp.ToDatetime(tzinfo=datetime.UTC)


def _response(result: QueryResult) -> pb.QueryEventsResponse:
    response = pb.QueryEventsResponse(
        columns=[
            pb.QueryColumn(name=name, type=kind)
            for name, kind in zip(result.columns, result.types, strict=True)
        ],
        truncated=result.truncated,
        files_listed=result.files_listed,
        files_read=result.files_read,
        bytes_read=result.bytes_read,
    )
    size = response.ByteSize()
    for row in result.rows:
        values = struct_pb2.ListValue()
        values.extend([_exact(value) for value in row])
        size += values.ByteSize() + 8
        if size > RESPONSE_BYTES:
            response.truncated = True
            break
        response.rows.append(values)
    return response


def _exact(value: Any) -> Any:
    """A JSON value whose integers a double holds exactly (larger ones as text)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -_EXACT_INTEGER <= value <= _EXACT_INTEGER else str(value)
    if isinstance(value, dict):
        return {key: _exact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_exact(item) for item in value]
    return value
