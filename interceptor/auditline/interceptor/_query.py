"""SQL over an exported log: DuckDB views over the data files of a location (a
directory or an S3 bucket), every node's and every format's, pruned by partition.

The views (each exists, empty, even when no file feeds it):

- `events`: every event of the `apievent` files, of every log (the account_api,
  summaries and findings lines are `{"ApiEvent": …}`; the IAM and settings records
  carry their whole event, which is taken from them). Columns: `ApiEvent`'s fields
  under their JSON names, typed from the contract (`Request` and `Response` structs,
  `Sequence` a BIGINT, timestamps TIMESTAMPTZ, `RequestParams`/`ResponseBody` JSON,
  `Metadata` a MAP, enums by name), then `time` (`Request.RequestTime`), `log`,
  `node` and `file` (the object key).
- `ocsf`: the records of the `ocsf-json` and `ocsf-parquet` files, API Activity (6003)
  and Detection Finding (2004) of every OCSF version in one set of columns: the
  attributes the exporter writes as nested structs typed from the OCSF classes (the
  Parquet schema), the free-form ones (`unmapped`, `api.request.data`,
  `api.response.data`) as JSON; then `time_dt` (`time` as a TIMESTAMPTZ), `log`,
  `node`, `file`.
- `iam` and `settings`: those logs' records in their own structures, as written
  (`content.details` as JSON); then `time` (their event's), `log`, `node`, `file`.
- `files`: the data files read: `key`, `format`, `log`, `node`, `day`, `first_seq`,
  `last_seq`.

A file is read only if its key's day (`YYYY/MM/DD`, `year=…/month=…/day=…` or
`eventDay=YYYYMMDD`) can overlap [since, until]: the exporter cuts files at midnight
UTC by the time each call arrived, so no event of the range is in another day's file.
Rows are then kept by that time exactly (`time`; `time_dt` in `ocsf`, for a finding
the time it was made). Files in a bucket are downloaded to a temporary directory
first (DuckDB's httpfs extension is neither needed nor fetched); a directory's are
read in place.

The work is bounded, so that the API can offer it: one read-only statement, no file
but the log's, a row limit, a byte limit on the files read and a timeout (DuckDB
interrupted from a timer thread). duckdb and pyarrow (the `query` extra) are
imported only when a query runs.
"""

# (`_ident`, `_text`); the user's one statement runs as given, on a locked connection.
from __future__ import annotations

import dataclasses
import datetime
import decimal
import importlib
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from auditline.interceptor._compression import DATA_SUFFIXES
from auditline.interceptor._keys import DataFile, data_file
from auditline.interceptor._locations import LocalDirectory, Location
from auditline.interceptor._query_views import Views

if TYPE_CHECKING:
    import duckdb

__all__ = ["VIEWS", "QueryError", "QueryLimitError", "QueryResult", "query_exported"]

VIEWS = ("events", "ocsf", "iam", "settings", "files")


class QueryError(ValueError):
    """A query that could not run: bad SQL, a limit reached, the extra not installed."""


class QueryLimitError(QueryError):
    """A query stopped by one of its bounds: `limit` is "bytes", "time" or "memory"."""

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueryResult:
    columns: tuple[str, ...]
    types: tuple[str, ...]  # DuckDB's names: VARCHAR, TIMESTAMP WITH TIME ZONE, …
    # JSON values: timestamps as RFC 3339 text, JSON columns parsed, structs as objects.
    rows: tuple[tuple[Any, ...], ...]
    truncated: bool  # the statement had more rows than max_rows
    files_listed: int  # the location's data files
    files_read: int  # those whose day can overlap the range
    bytes_read: int


def query_exported(
    location: Location,
    sql: str,
    *,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    max_rows: int = 10_000,
    max_bytes: int | None = None,
    timeout: float = 60.0,
    threads: int | None = None,
    memory_bytes: int | None = None,
    max_result_bytes: int = 64 << 20,
) -> QueryResult:
    """Run one SELECT (or DESCRIBE, SHOW, SUMMARIZE) over the views of the
    module's text, the events kept to [since, until] (both inclusive; a naive time is
    UTC); `QueryError` says why it could not run.

    The rows returned are cut (`truncated`) after `max_rows`, or once they come to
    `max_result_bytes` as JSON; a single row over that is an error. `timeout` bounds
    the statement and the reading of its rows.

    `threads` and `memory_bytes` cap DuckDB's (default: every core, 80% of the RAM);
    what does not fit in memory spills to the temporary directory, at most as much
    again."""
    since, until = _utc(since), _utc(until)
    listed = [f for f in map(data_file, location.list_keys()) if f is not None]
    chosen = [
        f
        for f in listed
        if (since is None or f.day >= since.date()) and (until is None or f.day <= until.date())
    ]
    duckdb = _import("duckdb")
    _import("pyarrow")  # the `ocsf` columns are derived from the Parquet schema
    with tempfile.TemporaryDirectory(prefix="auditline-query-") as scratch:
        paths = _local_paths(location, chosen, Path(scratch), max_bytes)
        size = sum(path.stat().st_size for path in paths.values())
        if max_bytes is not None and size > max_bytes:
            raise QueryLimitError(
                f"the files to read hold {size} bytes, over the limit of {max_bytes}",
                limit="bytes",
            )
        with duckdb.connect(
            ":memory:", config=_config(scratch, threads, memory_bytes)
        ) as connection:
            Views(connection, chosen, paths, since, until).create()
            columns, types, rows, truncated = _run(
                duckdb, connection, sql, max_rows, timeout, max_result_bytes
            )
    return QueryResult(
        columns=columns,
        types=types,
        rows=rows,
        truncated=truncated,
        files_listed=len(listed),
        files_read=len(chosen),
        bytes_read=size,
    )


def _config(scratch: str, threads: int | None, memory_bytes: int | None) -> dict[str, Any]:
    # The spill files go to the query's own temporary directory, never the working one.
    config: dict[str, Any] = {"temp_directory": str(Path(scratch) / "spill")}
    if threads is not None:
        config["threads"] = threads
    if memory_bytes is not None:
        config["memory_limit"] = f"{memory_bytes}B"
        config["max_temp_directory_size"] = f"{memory_bytes}B"
    return config


def _utc(value: datetime.datetime | None) -> datetime.datetime | None:
    if value is None:
        return None
    return value.astimezone(datetime.UTC) if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise QueryError(
            f"queries need {name}: pip install 'auditline-interceptor[query]'"
        ) from None


def _local_paths(
    location: Location, files: list[DataFile], scratch: Path, max_bytes: int | None
) -> dict[str, Path]:
    """Each file's path on this machine: in place in a directory, else downloaded."""
    if isinstance(location, LocalDirectory):
        return {f.key: (location.root / f.key).resolve() for f in files}
    downloaded = 0
    lock = threading.Lock()

    def fetch(index: int, file: DataFile) -> tuple[str, Path]:
        nonlocal downloaded
        over = QueryLimitError(
            f"the files to read hold over the limit of {max_bytes} bytes", limit="bytes"
        )
        if max_bytes is not None and downloaded > max_bytes:
            raise over  # stop downloading once past the limit, not after it all
        data = location.read(file.key)
        if data is None:
            raise QueryError(f"{file.key} was listed, then could not be read")
        with lock:
            downloaded += len(data)
            if max_bytes is not None and downloaded > max_bytes:
                raise over
        # A short flat name; its suffix tells DuckDB the compression.
        suffix = next(s for s in DATA_SUFFIXES if file.key.endswith(s))
        path = scratch / f"{index:06d}{suffix}"
        path.write_bytes(data)
        return file.key, path

    # I/O bound: a few downloads at once (boto3's clients are thread-safe).
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(fetch, range(len(files)), files))


# --- the views --------------------------------------------------------------------------


# The column the bounded statement adds: each row's size as JSON.
_ROW_BYTES = "_auditline_row_bytes"


def _bounded(duckdb: Any, sql: str, max_rows: int, max_result_bytes: int) -> str:
    """The statement wrapped so that DuckDB sizes each row and stops at the limits:
    the rows reach Python one small batch at a time, and a row too large never does
    (converting a result to Python objects is outside DuckDB's memory and time caps:
    a 1,000-row result of 20,000-item lists took 1.7 GB and four times the timeout;
    found by a review helper)."""
    # Its trailing semicolons and comments off, so that it nests.
    end = len(sql)
    for start, kind in reversed(duckdb.tokenize(sql)):
        if kind != duckdb.token_type.comment and not sql.startswith(";", start):
            break
        end = start
    too_large = f"a row of the result is over {max_result_bytes} bytes as JSON"
    # The caller's own statement, on a connection locked to its files.
    return (
        f"SELECT * FROM (SELECT q.*, strlen(to_json(q)::VARCHAR) AS {_ROW_BYTES} "  # noqa: S608
        f"FROM (\n{sql[:end]}\n) AS q) WHERE CASE WHEN {_ROW_BYTES} > {max_result_bytes} "
        f"THEN error('{too_large}') ELSE true END LIMIT {max_rows + 1}"
    )


def _run(
    duckdb: Any,
    connection: duckdb.DuckDBPyConnection,
    sql: str,
    max_rows: int,
    timeout: float,
    max_result_bytes: int,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[Any, ...], ...], bool]:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise QueryError(_message(error)) from None
    # SELECT only (DESCRIBE, SHOW and SUMMARIZE are SELECTs to DuckDB). Not EXPLAIN:
    # `EXPLAIN ANALYZE` runs the statement it explains, a COPY too, and DuckDB's
    # allowed paths (the exported files) are writable ones: a caller could rewrite the
    # log (found by a review helper).
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise QueryError("a query is one SELECT statement (or DESCRIBE, SHOW, SUMMARIZE)")
    deadline = time.monotonic() + timeout
    # DuckDB stops a running statement when interrupted from another thread.
    timer = threading.Timer(timeout, connection.interrupt)
    timer.daemon = True
    timer.start()
    values: list[tuple[Any, ...]] = []
    truncated = False
    try:
        connection.execute(_bounded(duckdb, sql, max_rows, max_result_bytes))
        description = (connection.description or [])[:-1]  # not the row's size
        kinds = [column[1] for column in description]
        names = tuple(column[0] for column in description)
        size = 0
        while not truncated and (batch := connection.fetchmany(64)):
            for *row, row_bytes in batch:
                size += row_bytes
                if len(values) == max_rows or size > max_result_bytes:
                    truncated = True
                    break
                values.append(tuple(_jsonable(v, k) for v, k in zip(row, kinds, strict=True)))
            if time.monotonic() > deadline:
                raise duckdb.InterruptException("past the deadline while reading the rows")
    except duckdb.OutOfMemoryException as error:
        raise QueryLimitError(_message(error), limit="memory") from None
    except duckdb.InterruptException:
        raise QueryLimitError(f"the query ran longer than {timeout:g} s", limit="time") from None
    except duckdb.Error as error:
        message = _message(error)
        if f"a row of the result is over {max_result_bytes} bytes" in message:
            raise QueryLimitError(message, limit="bytes") from None
        raise QueryError(message) from None
    finally:
        timer.cancel()
    return names, tuple(map(str, kinds)), tuple(values), truncated


def _message(error: Exception) -> str:
    """DuckDB's message on one line: the error and its hint, not the statement quoted."""
    lines = [line.strip() for line in str(error).splitlines()]
    quoted = next((i for i, line in enumerate(lines) if line.startswith("LINE ")), len(lines))
    return " ".join(line for line in lines[:quoted] if line)


def _jsonable(value: Any, kind: Any) -> Any:
    """A DuckDB value as JSON holds it, by its column's type."""
    if value is None:
        return None
    if str(kind) == "JSON":
        return orjson.loads(value)
    if kind.id == "struct":
        return {name: _jsonable(value[name], child) for name, child in kind.children}
    if kind.id in ("list", "array"):
        return [_jsonable(item, kind.children[0][1]) for item in value]
    if kind.id == "map":
        return {str(k): _jsonable(v, kind.children[1][1]) for k, v in value.items()}
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)  # a HUGEINT past what JSON readers take
    # Timestamps as RFC 3339 text, decimals as numbers, anything else as text.
    return orjson.loads(orjson.dumps(value, default=_scalar, option=orjson.OPT_UTC_Z))


def _scalar(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value.hex() if isinstance(value, bytes) else str(value)
