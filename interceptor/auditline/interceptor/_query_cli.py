"""`auditline events query SQL`: SQL over the exported log (`_query`), added to the
client's `events` group through the `events.query` entry point.

Exit codes: 0 when the query ran, 1 when it could not (bad SQL, a location that cannot
be read, a limit reached), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import orjson

from auditline.interceptor._locations import open_location
from auditline.interceptor._query import QueryError, QueryResult, query_exported

__all__ = ["add_query_command", "embedded_store"]

_CELL = 80  # a table's cell is cut here: --json and --csv print values whole

_DESCRIPTION = """\
Run one SQL statement (DuckDB's dialect: SELECT, DESCRIBE, SHOW, SUMMARIZE)
over the exported log files of every node, JSON Lines (gzip, zstd) and Parquet. Views:
`events` (every event of the apievent files, each log's: ApiEvent's fields under their
JSON names, Request/Response as structs, Sequence a BIGINT, timestamps TIMESTAMPTZ,
RequestParams/ResponseBody JSON; then time, log, node, file), `ocsf` (the OCSF records
of the ocsf-json and ocsf-parquet files as nested structs, free-form attributes as
JSON; then time_dt, log, node, file), `iam` and `settings` (those logs' own records;
then time, log, node, file) and `files` (the files read). --since and --until read
only the days' files that can hold events of the range, then keep the events by time.
On stderr: how many files were read of how many listed.
"""


def embedded_store(environ: os._Environ[str] | dict[str, str] = os.environ) -> str:
    """Where `auditline serve` exports, found from the variables it reads itself:
    `AUDITLINE_EXPORT_TARGET` when set; else its own object store, the directory
    DATA_DIR/objects (`AUDITLINE_DATA_DIR`, default ./data; `AUDITLINE_OBJECT_STORE`
    file:///PATH: PATH) — every bucket in it, so the audit bucket and any bucket the
    target was moved to (`auditline audit target`), each under `<bucket>/objects/`;
    for an S3 object store, the audit bucket (`AUDITLINE_AUDIT_BUCKET`)."""
    if target := environ.get("AUDITLINE_EXPORT_TARGET"):
        return target
    store = urlparse(environ.get("AUDITLINE_OBJECT_STORE", ""))
    if store.scheme == "s3":
        bucket = environ.get("AUDITLINE_AUDIT_BUCKET") or "auditline-audit-logs"
        return f"s3://{bucket}" + (f"?{store.query}" if store.query else "")
    if store.scheme == "file":
        return unquote(store.path)
    return str(Path(environ.get("AUDITLINE_DATA_DIR") or "data") / "objects")


def _time(text: str, *, end_of_day: bool = False) -> datetime.datetime:
    """RFC 3339 or YYYY-MM-DD (UTC); a date as --until means through that day."""
    try:
        if len(text) == 10:
            day = datetime.date.fromisoformat(text)
            start = datetime.datetime.combine(day, datetime.time(), datetime.UTC)
            if end_of_day:
                return start + datetime.timedelta(days=1, microseconds=-1)
            return start
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 time or a YYYY-MM-DD date"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_query_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`query` in the `events` group (the entry point `events.query`)."""
    parser = subparsers.add_parser(
        "query", help="SQL (DuckDB) over the exported log files", description=_DESCRIPTION
    )
    parser.add_argument("sql", metavar="SQL")
    parser.add_argument(
        "--from",
        dest="location",
        default=None,
        metavar="LOCATION",
        help="a directory whose relative paths are the object keys, or "
        "s3://BUCKET[/PREFIX]?endpoint=URL&region=R; default: the embedded store, where "
        f"`auditline serve` exports, every bucket of it (here: {embedded_store()})",
    )
    parser.add_argument(
        "--since", type=_time, metavar="T", help="events from (RFC 3339 or YYYY-MM-DD, UTC)"
    )
    parser.add_argument(
        "--until",
        metavar="T",
        type=lambda text: _time(text, end_of_day=True),
        help="events up to (RFC 3339, or YYYY-MM-DD: through that day)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="JSON Lines: one object per row")
    output.add_argument("--csv", action="store_true", help="CSV with a header row")
    parser.add_argument(
        "--max-rows", type=_positive, default=10_000, metavar="N", help="default 10000"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="seconds the query may run (default 300)",
    )
    parser.set_defaults(handler=_query_command)


def _query_command(args: argparse.Namespace) -> int:
    where = args.location or embedded_store()
    try:
        location = open_location(where)
        result = query_exported(
            location,
            args.sql,
            since=args.since,
            until=args.until,
            max_rows=args.max_rows,
            timeout=args.timeout,
        )
    except QueryError as error:
        return _fail(str(error))
    except ValueError as error:  # not a directory, not an S3 URL
        if args.location is None:
            return _fail(f"no log at {where}, the embedded store (no node here?): pass --from")
        return _fail(str(error))
    except Exception as error:  # an unreachable store, a refused bucket: no verdict on SQL
        if getattr(args, "debug", False):
            raise
        return _fail(f"cannot read {where}: {type(error).__name__}: {error}")
    if args.json:
        for row in result.rows:
            print(orjson.dumps(dict(zip(result.columns, row, strict=True))).decode())
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([_text(value, csv=True) for value in row] for row in result.rows)
    else:
        _table(result)
    cut = f", cut at --max-rows {args.max_rows}" if result.truncated else ""
    print(
        f"{len(result.rows)} rows{cut}; read {result.files_read} of {result.files_listed} "
        f"files ({result.bytes_read:,} bytes)",
        file=sys.stderr,
    )
    return 0


def _fail(message: str) -> int:
    print(f"auditline events query: {message}", file=sys.stderr)
    return 1


def _text(value: Any, *, csv: bool = False) -> str:
    if value is None:
        return "" if csv else "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def _table(result: QueryResult) -> None:
    """Aligned columns, two spaces apart, as the client's tables; long values cut."""

    def cell(value: Any) -> str:
        text = _text(value).replace("\n", "\\n").replace("\t", "\\t")
        return text if len(text) <= _CELL else text[: _CELL - 1] + "…"

    table = [[cell(value) for value in row] for row in result.rows]
    widths = [max([len(c), *(len(r[i]) for r in table)]) for i, c in enumerate(result.columns)]
    for line in [list(result.columns), *table]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
