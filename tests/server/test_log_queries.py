"""QueryEvents' bounds, without a server: the response's size and integers, one query at
a time, and each limit answered with its code (the API test, test_query_api.py, runs
the same code through `auditline serve`)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from auditline.audit.v1 import audit_log_pb2 as pb
from auditline.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    ResourceExhaustedError,
)
from auditline.interceptor import LocalDirectory
from auditline.server.log_queries import RESPONSE_BYTES, ExportedLogQueries, QueryLimits
from tests.support.processes import wait_for

# Seconds of work for DuckDB on one thread: far longer than any bound below.
ENDLESS = "SELECT sum(hash(range)) FROM range(1000000000000)"


def _queries(root: Path, **limits: float) -> ExportedLogQueries:
    bounds = {"timeout": 30.0, "max_bytes": 1 << 20, "memory_bytes": 256 << 20} | limits
    return ExportedLogQueries(
        locate=lambda name: LocalDirectory(root),
        limits=QueryLimits(
            timeout=float(bounds["timeout"]),
            max_bytes=int(bounds["max_bytes"]),
            memory_bytes=int(bounds["memory_bytes"]),
        ),
    )


def _run(queries: ExportedLogQueries, sql: str, **fields: object) -> pb.QueryEventsResponse:
    return queries.run(pb.QueryEventsRequest(sql=sql, **fields), None)  # type: ignore[arg-type]


def test_values_come_as_json_holds_them(tmp_path: Path) -> None:
    response = _run(
        _queries(tmp_path),
        "SELECT 9007199254740993::BIGINT AS big, 42 AS small, 'text' AS t, "
        "TIMESTAMPTZ '2026-12-05 10:00:00+00' AS at, {'n': (2::BIGINT << 59)} AS s, "
        "NULL AS nothing",
    )
    assert [(c.name, c.type) for c in response.columns] == [
        ("big", "BIGINT"),
        ("small", "INTEGER"),
        ("t", "VARCHAR"),
        ("at", "TIMESTAMP WITH TIME ZONE"),
        ("s", "STRUCT(n BIGINT)"),
        ("nothing", '"NULL"'),
    ]
    (row,) = response.rows
    big, small, text, at, struct, nothing = row.values
    # Past 2^53 a double is not exact: the number goes as its decimal text.
    assert big.string_value == "9007199254740993"
    assert small.number_value == 42
    assert text.string_value == "text"
    assert at.string_value == "2026-12-05T10:00:00Z"
    assert struct.struct_value["n"] == str(2**60)
    assert nothing.WhichOneof("kind") == "null_value"
    assert not response.truncated


def test_rows_are_cut_at_the_row_limit_and_at_one_mebibyte(tmp_path: Path) -> None:
    queries = _queries(tmp_path)
    by_rows = _run(queries, "SELECT range FROM range(5000)", max_rows=7)
    assert [r.values[0].number_value for r in by_rows.rows] == list(range(7))
    assert by_rows.truncated
    default = _run(queries, "SELECT range FROM range(5000)")
    assert len(default.rows) == 100
    # 40 rows of 100 kB: the response stops before 1 MiB, and says it was cut.
    by_size = _run(queries, "SELECT repeat('x', 100000) AS x FROM range(40)", max_rows=1000)
    assert 0 < len(by_size.rows) < 40
    assert by_size.ByteSize() <= RESPONSE_BYTES
    assert by_size.truncated
    with pytest.raises(InvalidArgumentError) as negative:
        _run(queries, "SELECT 1", max_rows=-1)
    assert negative.value.field_violations == [("max_rows", "must not be negative")]


def test_a_bad_statement_names_the_sql_field(tmp_path: Path) -> None:
    queries = _queries(tmp_path)
    for sql, problem in (
        ("", "is required"),
        ("SELECT nope FROM events", 'Referenced column "nope" not found'),
        ("DELETE FROM events", "a query is one SELECT statement"),
        ("SELECT * FROM read_text('/etc/hostname')", "Permission Error"),
    ):
        with pytest.raises(InvalidArgumentError) as refused:
            _run(queries, sql)
        ((field, description),) = refused.value.field_violations
        assert field == "sql"
        assert problem in description, description


def test_each_bound_answers_with_its_code(tmp_path: Path) -> None:
    with pytest.raises(ResourceExhaustedError, match=r"longer than 0\.3 s"):
        _run(_queries(tmp_path, timeout=0.3), ENDLESS)
    # The call's deadline, when it comes first, is the bound, with its own code.
    with pytest.raises(DeadlineExceededError):
        _queries(tmp_path).run(pb.QueryEventsRequest(sql=ENDLESS), 0.3)
    with pytest.raises(ResourceExhaustedError, match="Out of Memory"):
        _run(
            _queries(tmp_path, memory_bytes=32 << 20),
            "SELECT count(*) FROM (SELECT list(range) FROM range(50000000) "
            "GROUP BY range % 5000000)",
        )
    day = tmp_path / "apievent" / "account_api" / "2026" / "12" / "05"
    day.mkdir(parents=True)
    (day / "node-000000000001-000000000002.jsonl").write_bytes(b"{}\n" * 100)
    with pytest.raises(ResourceExhaustedError, match="over the limit of 10"):
        _run(_queries(tmp_path, max_bytes=10), "SELECT count(*) FROM events")


def test_one_query_runs_at_a_time(tmp_path: Path) -> None:
    queries = _queries(tmp_path, timeout=5.0)
    first: list[BaseException] = []

    def endless() -> None:
        try:
            _run(queries, ENDLESS)
        except BaseException as error:  # the outcome is asserted below
            first.append(error)

    runner = threading.Thread(target=endless)
    runner.start()
    wait_for(lambda: queries._running.locked() or None, timeout=10, what="the first query")
    with pytest.raises(ResourceExhaustedError, match="another query is running"):
        _run(queries, "SELECT 1")
    runner.join()
    assert isinstance(first[0], ResourceExhaustedError)  # its own timeout ended it
    assert _run(queries, "SELECT 1").rows[0].values[0].number_value == 1
