"""The DuckDB views of `auditline events query` over the log's files (`_query`): their
columns typed from the contract (`ApiEvent`) and from the OCSF Parquet schema, one
view per shape, each over every file of its format, kept to the time range; then the
connection locked so that nothing but those files can be read."""

# ruff: noqa: S608 - the views' SQL is made of this module's names and quoted literals
# (`_ident`, `_text`); the user's one statement runs as given, on a locked connection.
from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditline.interceptor._log_shapes import console_record, iam_record

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from auditline.interceptor._keys import DataFile

__all__ = ["Views"]

# Columns' types: a DuckDB type, or a struct's fields by name.
Tree = dict[str, "Tree | str"]


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
    # `records=true`: each line is one record. Left to guess, DuckDB reads every file
    # again to find out (1.6 s for `SELECT 1` over 140 files; 0.25 s with it).
    return (
        f"read_json({_files_sql(paths)}, format='newline_delimited', records=true, "
        f"columns={{{spec}}}, filename=true, hive_partitioning=false)"
    )


class Views:
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
