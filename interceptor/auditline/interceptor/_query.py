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

# ruff: noqa: S608 - the views' SQL is made of this module's names and quoted literals
# (`_ident`, `_text`); the user's one statement runs as given, on a locked connection.
from __future__ import annotations

import dataclasses
import datetime
import decimal
import importlib
import json
import re
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from auditline.interceptor._compression import DATA_SUFFIXES
from auditline.interceptor._locations import LocalDirectory, Location
from auditline.interceptor._log_names import LOG_DIR_NAMES
from auditline.interceptor._log_shapes import console_record, iam_record

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

__all__ = ["VIEWS", "DataFile", "QueryError", "QueryResult", "data_file", "query_exported"]

VIEWS = ("events", "ocsf", "iam", "settings", "files")
_LOGS = "|".join(sorted(set(LOG_DIR_NAMES.values())))
_NAME = r"(?P<node>[^/]+)-(?P<first>\d{12,})-(?P<last>\d{12,})"
_JSON_KEY = re.compile(
    rf"(?:^|/)(?P<format>apievent|ocsf)/(?P<log>{_LOGS})/(?:(?P<y>\d{{4}})/(?P<m>\d\d)/"
    rf"(?P<d>\d\d)|year=(?P<hy>\d{{4}})/month=(?P<hm>\d\d)/day=(?P<hd>\d\d))/{_NAME}\.jsonl"
    r"(?:\.gz|\.zst)?$"
)
_PARQUET_KEY = re.compile(
    rf"(?:^|/)region=[^/]*/accountId=[^/]*/eventDay=(?P<day>\d{{8}})/(?P<log>{_LOGS})-"
    rf"{_NAME}\.parquet$"
)
# Columns' types: a DuckDB type, or a struct's fields by name.
Tree = dict[str, "Tree | str"]


class QueryError(ValueError):
    """A query that could not run: bad SQL, a limit reached, the extra not installed."""


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataFile:
    key: str
    format: str  # apievent-json, ocsf-json or ocsf-parquet
    log: str
    node: str
    day: datetime.date
    first_seq: int
    last_seq: int


def data_file(key: str) -> DataFile | None:
    """What an exported data file's key says of it; None for any other object."""
    if "integrity/" in key:
        return None
    if match := _PARQUET_KEY.search(key):
        format_name, text = "ocsf-parquet", match["day"]
        day = datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    elif match := _JSON_KEY.search(key):
        format_name = f"{match['format']}-json"
        parts = match.group("y", "m", "d") if match["y"] else match.group("hy", "hm", "hd")
        day = datetime.date(*map(int, parts))
    else:
        return None
    return DataFile(
        key=key,
        format=format_name,
        log=match["log"],
        node=match["node"],
        day=day,
        first_seq=int(match["first"]),
        last_seq=int(match["last"]),
    )


def query_exported(
    location: Location,
    sql: str,
    *,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    max_rows: int = 10_000,
    max_bytes: int | None = None,
    timeout: float = 60.0,
) -> QueryResult:
    """Run one SELECT (or DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) over the views of the
    module's text, the events kept to [since, until] (both inclusive; a naive time is
    UTC); `QueryError` says why it could not run."""
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
            raise QueryError(f"the files to read hold {size} bytes, over the limit of {max_bytes}")
        with duckdb.connect(":memory:") as connection:
            _Views(connection, chosen, paths, since, until).create()
            columns, types, rows, truncated = _run(duckdb, connection, sql, max_rows, timeout)
    return QueryResult(
        columns=columns,
        types=types,
        rows=rows,
        truncated=truncated,
        files_listed=len(listed),
        files_read=len(chosen),
        bytes_read=size,
    )


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
        over = QueryError(f"the files to read hold over the limit of {max_bytes} bytes")
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


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _type(tree: Tree | str) -> str:
    if isinstance(tree, str):
        return tree
    return "STRUCT(" + ", ".join(f"{_ident(k)} {_type(v)}" for k, v in tree.items()) + ")"


@cache
def _apievent_tree() -> Tree:
    """`ApiEvent`'s fields by JSON name, typed from the contract's descriptors (a field
    of another kind, should one come, as JSON)."""
    from google.protobuf.descriptor import FieldDescriptor as F

    from auditline.audit.v1 import event_pb2

    scalars = {F.TYPE_STRING: "VARCHAR", F.TYPE_ENUM: "VARCHAR", F.TYPE_BOOL: "BOOLEAN"}
    scalars |= {F.TYPE_INT32: "INTEGER", F.TYPE_INT64: "BIGINT", F.TYPE_DOUBLE: "DOUBLE"}
    messages = {"google.protobuf.Timestamp": "TIMESTAMPTZ", "google.protobuf.Struct": "JSON"}

    def tree(message: Any) -> Tree:
        out: Tree = {}
        for field in message.fields:
            kind: Tree | str = scalars.get(field.type, "JSON")
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                kind = "MAP(VARCHAR, VARCHAR)"
            elif field.message_type is not None:
                kind = messages.get(field.message_type.full_name) or tree(field.message_type)
                kind = "JSON" if field.is_repeated else kind
            elif field.is_repeated:
                kind = f"{kind}[]"
            out[field.json_name] = kind
        return out

    return tree(event_pb2.ApiEvent.DESCRIPTOR)


def _record_tree(record: dict[str, Any], free_form: str = "", path: str = "") -> Tree:
    """A log structure's columns from an example record; `free_form` as JSON."""
    kinds = {bool: "BOOLEAN", int: "BIGINT", float: "DOUBLE", str: "VARCHAR"}
    return {
        key: _record_tree(value, free_form, f"{path}{key}.")
        if isinstance(value, dict) and value and f"{path}{key}" != free_form
        else kinds.get(type(value), "JSON")
        for key, value in record.items()
    }


@cache
def _ocsf_columns() -> dict[str, str]:
    """The `ocsf` view's columns: the Parquet schemas of every class and version, one."""
    import pyarrow as pa

    from auditline.interceptor._ocsf import OCSF_VERSIONS, WRITTEN_ATTRIBUTES
    from auditline.interceptor._ocsf_parquet import arrow_schema

    schemas = [arrow_schema(c, v) for c in WRITTEN_ATTRIBUTES for v in OCSF_VERSIONS]
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    return {field.name: _arrow_type(field) for field in unified}


def _arrow_type(field: pa.Field[Any]) -> str:
    import pyarrow as pa

    kind = field.type
    if field.metadata and field.metadata.get(b"ocsf_type") == b"json":
        return "JSON"  # JSON text in Parquet, an object in ocsf-json: JSON from both
    if pa.types.is_struct(kind):
        fields = [kind.field(i) for i in range(kind.num_fields)]
        return f"STRUCT({', '.join(f'{_ident(f.name)} {_arrow_type(f)}' for f in fields)})"
    if pa.types.is_list(kind):
        return _arrow_type(kind.value_field) + "[]"
    return {"int64": "BIGINT", "double": "DOUBLE", "bool": "BOOLEAN"}.get(str(kind), "VARCHAR")


def _files_sql(paths: list[str]) -> str:
    return "[" + ", ".join(map(_text, paths)) + "]"


def _read_json(paths: list[str], columns: dict[str, str]) -> str:
    """The files' lines with the given columns typed (DuckDB converts `"7"` to 7, an
    RFC 3339 text to a timestamp, an object to JSON; missing keys are NULL)."""
    spec = ", ".join(f"{_text(name)}: {_text(kind)}" for name, kind in columns.items())
    return (
        f"read_json({_files_sql(paths)}, format='newline_delimited', columns={{{spec}}}, "
        "filename=true, hive_partitioning=false)"
    )


class _Views:
    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        files: list[DataFile],
        paths: dict[str, Path],
        since: datetime.datetime | None,
        until: datetime.datetime | None,
    ) -> None:
        self.connection = connection
        self.files = [(str(paths[f.key]), f) for f in files]
        self.allowed = sorted(str(path) for path in paths.values())
        self.bounds = [f"{_text(t.isoformat())}::TIMESTAMPTZ" if t else "" for t in (since, until)]

    def paths(self, format_name: str, logs: Callable[[str], bool] = bool) -> list[str]:
        return [p for p, f in self.files if f.format == format_name and logs(f.log)]

    def create(self) -> None:
        """Every view, then the connection locked: only these files can be read."""
        run = self.connection.execute
        run("SET TimeZone = 'UTC'")  # timestamps shown and compared in UTC
        run("SET python_enable_replacements = false")  # no Python variable as a table
        run("SET autoinstall_known_extensions = false")  # offline, and bounded
        run(
            "CREATE TABLE _files (path VARCHAR, key VARCHAR, format VARCHAR, log VARCHAR, "
            "node VARCHAR, day DATE, first_seq BIGINT, last_seq BIGINT)"
        )
        for path, f in self.files:
            values = (path, f.key, f.format, f.log, f.node, f.day, f.first_seq, f.last_seq)
            run("INSERT INTO _files VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
        run("CREATE VIEW files AS SELECT * EXCLUDE (path) FROM _files ORDER BY key")
        self.events()
        self.ocsf()
        self.shapes()
        run("SET allowed_paths = ?", [self.allowed])
        run("SET enable_external_access = false")
        run("SET lock_configuration = true")

    def view(self, name: str, columns: dict[str, str], parts: list[str], time: str) -> None:
        """A view of `columns` (name: type) over the parts (each selecting them and
        the `filename`), then the event time (`time`, an expression over `s`) and the
        file's log, node and key; rows kept to the bounds. An empty, typed first part
        gives the view its columns even when no file feeds it."""
        empty = ", ".join(f"NULL::{kind} AS {_ident(column)}" for column, kind in columns.items())
        union = " UNION ALL ".join([f"SELECT {empty}, NULL AS filename WHERE false", *parts])
        since, until = self.bounds
        where = [f"{time} >= {since}"] * bool(since) + [f"{time} <= {until}"] * bool(until)
        self.connection.execute(
            f"CREATE VIEW {name} AS SELECT {', '.join('s.' + _ident(c) for c in columns)}, "
            f"{time} AS {'time_dt' if name == 'ocsf' else 'time'}, f.log, f.node, "
            f"f.key AS file FROM ({union}) AS s JOIN _files AS f ON f.path = s.filename"
            + "".join(f" {'AND' if i else 'WHERE'} {w}" for i, w in enumerate(where))
        )

    def events(self) -> None:
        tree = _apievent_tree()
        event = _type(tree)
        structure = _text(json.dumps({"ApiEvent": tree}))
        # Where each log's lines hold their event: the line itself, the IAM structure's
        # details, the console structure's JSON string (parsed into the same struct).
        console = f"json_transform(ConsoleEvent.EventResponse, {structure}).ApiEvent"
        sources = [
            ("ApiEvent", event, "ApiEvent", lambda log: log not in ("iam", "settings")),
            (
                "content",
                f"STRUCT(details STRUCT(ApiEvent {event}))",
                "content.details.ApiEvent",
                "iam".__eq__,
            ),
            ("ConsoleEvent", "STRUCT(EventResponse VARCHAR)", console, "settings".__eq__),
        ]
        fields = ", ".join(f"e.{_ident(name)} AS {_ident(name)}" for name in tree)
        parts = [
            f"SELECT {fields}, filename FROM (SELECT {extract} AS e, filename "
            f"FROM {_read_json(paths, {column: kind})})"
            for column, kind, extract, logs in sources
            if (paths := self.paths("apievent-json", logs))
        ]
        columns = {name: _type(kind) for name, kind in tree.items()}
        self.view("events", columns, parts, 's."Request"."RequestTime"')

    def ocsf(self) -> None:
        columns = _ocsf_columns()
        parts = []
        if paths := self.paths("ocsf-json"):
            names = ", ".join(map(_ident, columns))
            parts.append(f"SELECT {names}, filename FROM {_read_json(paths, columns)}")
        if paths := self.paths("ocsf-parquet"):
            source = (
                f"read_parquet({_files_sql(paths)}, union_by_name=true, filename=true, "
                "hive_partitioning=false)"
            )
            # A class's or a version's files lack the others' columns (NULL here); a
            # struct is cast by name (missing fields NULL), JSON text to JSON.
            present = {
                row[0] for row in self.connection.execute(f"DESCRIBE FROM {source}").fetchall()
            }
            selected = ", ".join(
                f"CAST({_ident(name) if name in present else 'NULL'} AS {kind}) AS {_ident(name)}"
                for name, kind in columns.items()
            )
            parts.append(f"SELECT {selected}, filename FROM {source}")
        self.view("ocsf", columns, parts, 'make_timestamptz(s."time" * 1000)')

    def shapes(self) -> None:
        """`iam` and `settings`: the records as written, their columns from an example."""
        for log, example, free_form, event in (
            ("iam", iam_record({}), "content.details", 's."content"."details"'),
            ("settings", console_record({}), "", 's."ConsoleEvent"."EventResponse"'),
        ):
            columns = {k: _type(v) for k, v in _record_tree(example, free_form).items()}
            paths = self.paths("apievent-json", log.__eq__)
            parts = [f"SELECT * FROM {_read_json(paths, columns)}"] if paths else []
            time = f"TRY_CAST({event}->>'$.ApiEvent.Request.RequestTime' AS TIMESTAMPTZ)"
            self.view(log, columns, parts, time)


# --- running the statement ---------------------------------------------------------------


def _run(
    duckdb: Any, connection: duckdb.DuckDBPyConnection, sql: str, max_rows: int, timeout: float
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[Any, ...], ...], bool]:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise QueryError(_message(error)) from None
    allowed = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)
    if len(statements) != 1 or statements[0].type not in allowed:
        raise QueryError("a query is one SELECT statement (or DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)")
    # DuckDB stops a running statement when interrupted from another thread.
    timer = threading.Timer(timeout, connection.interrupt)
    timer.daemon = True
    timer.start()
    try:
        connection.execute(sql)
        kinds = [column[1] for column in connection.description or []]
        names = tuple(column[0] for column in connection.description or [])
        rows = connection.fetchmany(max_rows + 1)
    except duckdb.InterruptException:
        raise QueryError(f"the query ran longer than {timeout:g} s") from None
    except duckdb.Error as error:
        raise QueryError(_message(error)) from None
    finally:
        timer.cancel()
    values = tuple(
        tuple(_jsonable(v, k) for v, k in zip(row, kinds, strict=True)) for row in rows[:max_rows]
    )
    return names, tuple(map(str, kinds)), values, len(rows) > max_rows


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
