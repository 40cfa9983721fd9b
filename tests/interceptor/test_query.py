"""`auditline events query`: SQL (DuckDB) over files the real Exporter wrote for several
nodes and days — every event made comes back, exactly; the time range reads only its
days' files (`YYYY/MM/DD`, `year=/month=/day=` and Security Lake's `eventDay=`); JSON
Lines and Parquet of either OCSF version in one `ocsf` view; a SeaweedFS bucket; the
command's table, JSON Lines and CSV; its errors; its bounds; the embedded store."""

from __future__ import annotations

import csv
import datetime
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from auditline.audit.v1 import event_pb2, options_pb2
from auditline.client.cli import main
from auditline.interceptor import DirectoryWriter, Exporter, ExporterConfig, Spool, open_writer
from auditline.interceptor._export_config import ObjectWriter
from auditline.interceptor._query import (
    VIEWS,
    QueryError,
    QueryLimitError,
    QueryResult,
    query_exported,
)
from auditline.interceptor._query_cli import embedded_store
from auditline.interceptor.integrity import Notary, SigningKey, open_location
from tests.conftest import ServeFactory
from tests.support.seaweedfs import SeaweedFS

DAYS = [datetime.datetime(2027, 1, 15 + d, tzinfo=datetime.UTC) for d in range(3)]
# Midnight itself and a day's last microsecond: the edges of its partition.
OFFSETS = [datetime.timedelta(hours=h) for h in (0, 6, 12, 18)] + [
    datetime.timedelta(days=1, microseconds=-1)
]
LOGS = {
    event_pb2.LOG_TYPE_ACCOUNT_API: "account_api",
    event_pb2.LOG_TYPE_IAM: "iam",
    event_pb2.LOG_TYPE_SETTINGS: "settings",
    event_pb2.LOG_TYPE_SUMMARIES: "summaries",
    event_pb2.LOG_TYPE_FINDINGS: "findings",
}
NODES = ("node-a", "node-b")
FILES_A_DAY = len(NODES) * len(LOGS)
LAKE: dict[str, Any] = {"lake_region": "eu-west-1", "lake_account_id": "123456789012"}
EVENTS = (
    "SELECT EventId, Sequence, node, NodeId, log, time, EventName, Request.AccountName FROM events"
)
# An event as EVENTS gives it back.
Made = tuple[str, int, str, str, str, str, str, str]


def _text(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _event(node: str, index: int, log_type: int, at: datetime.datetime) -> event_pb2.ApiEvent:
    finding = log_type == event_pb2.LOG_TYPE_FINDINGS
    event = event_pb2.ApiEvent(
        event_name="DetectionFinding" if finding else "Call",
        version="2",
        event_id=f"{node}-{index}",
        node_id=node,
        service="auditline.account.v1.BucketService",
        method="CreateBucket",
        activity=options_pb2.ACTIVITY_CREATE,
        log_type=log_type,  # type: ignore[arg-type]
    )
    event.request.account_name = f"user{index % 3}"
    event.request.request_time.FromDatetime(at)
    # Made in an instant, as the product's findings are (a finding's OCSF `time` is its end).
    event.response.response_time.FromDatetime(at)
    event.response.response_status = "OK"
    if finding:
        event.request.request_params.update(
            {"rule": {"id": "r1", "title": "Brute force", "level": "high"}, "events": ["e1"]}
        )
    else:
        event.request.request_params.update({"bucket_id": f"b{index}", "n": index})
    return event


def _export(
    tmp_path: Path,
    writer: ObjectWriter,
    configs: list[ExporterConfig],
    nodes: tuple[str, ...] = NODES,
) -> list[Made]:
    """Each node's events, every log at each moment of three days, exported by every
    config with its signed manifests; the events as `EVENTS` gives them back."""
    made: list[Made] = []
    for node in nodes:
        spool = Spool(tmp_path / f"{node}-{uuid.uuid4().hex}.db", node_id=node)
        notary = Notary(key=SigningKey.generate(f"t/{node}"), origin=f"t/{node}", node_id=node)
        exporters = [Exporter(c, spool, writer, node_id=node, notary=notary) for c in configs]
        moments = [(day + offset, log) for day in DAYS for offset in OFFSETS for log in LOGS]
        for index, (at, log_type) in enumerate(moments):
            event = _event(node, index, log_type, at)
            spool.emit(event)
            log, name, account = LOGS[log_type], event.event_name, event.request.account_name
            made.append((event.event_id, index + 1, node, node, log, _text(at), name, account))
        assert spool.flush(30)
        for exporter in exporters:
            while exporter.export_once():
                pass
        spool.close()
    return sorted(made)


Moment = datetime.datetime | None


def _within(made: list[Made], since: Moment, until: Moment) -> list[Made]:
    return [
        m
        for m in made
        if (since is None or m[5] >= _text(since)) and (until is None or m[5] <= _text(until))
    ]


def _query(where: Path | str, sql: str, **bounds: Any) -> QueryResult:
    return query_exported(open_location(str(where)), sql, **bounds)


@pytest.mark.parametrize(
    ("partitioning", "compression"), [("date", "gzip"), ("hive", "zstd"), ("date", "none")]
)
def test_every_event_of_every_node_and_day_comes_back_exactly(
    tmp_path: Path, partitioning: str, compression: str
) -> None:
    root = tmp_path / "log"
    config = ExporterConfig(name="x", partitioning=partitioning, compression=compression)
    made = _export(tmp_path, DirectoryWriter(root), [config])
    result = _query(root, EVENTS)
    assert result.columns[-3:] == ("time", "EventName", "AccountName")
    assert sorted(result.rows) == made
    # A file a node, day and log; the integrity objects beside them are no data.
    assert result.files_listed == result.files_read == FILES_A_DAY * len(DAYS)
    assert (root / "integrity").is_dir()
    keys = _query(root, "SELECT key FROM files").rows
    assert all(("/year=2027/month=01/" in k) is (partitioning == "hive") for (k,) in keys)
    typed = _query(
        root,
        "SELECT typeof(Sequence), typeof(time), typeof(Request.RequestParams), "
        "Request.RequestParams->>'bucket_id' FROM events WHERE EventId = 'node-a-0'",
    )
    assert typed.rows == (("BIGINT", "TIMESTAMP WITH TIME ZONE", "JSON", "b0"),)


@pytest.mark.parametrize("partitioning", ["date", "hive"])
def test_the_time_range_reads_only_its_days_files_and_keeps_the_events_by_time(
    tmp_path: Path, partitioning: str
) -> None:
    root = tmp_path / "log"
    config = ExporterConfig(name="x", partitioning=partitioning)
    made = _export(tmp_path, DirectoryWriter(root), [config])
    ranges = [
        (DAYS[1] + OFFSETS[2], DAYS[1] + OFFSETS[3], {1}),  # within a day
        (DAYS[1] + OFFSETS[4], DAYS[2], {1, 2}),  # a day's last microsecond, then midnight
        (DAYS[2], None, {2}),
        (None, DAYS[0] + OFFSETS[4], {0}),
        (DAYS[0] - datetime.timedelta(days=9), DAYS[0] - datetime.timedelta(days=1), set()),
    ]
    for since, until, days in ranges:
        result = _query(root, EVENTS, since=since, until=until)
        assert sorted(result.rows) == _within(made, since, until), (since, until)
        assert result.files_read == FILES_A_DAY * len(days), (since, until)
        assert result.files_listed == FILES_A_DAY * len(DAYS)
        read = _query(root, "SELECT DISTINCT day FROM files", since=since, until=until)
        assert {day for (day,) in read.rows} == {DAYS[d].date().isoformat() for d in days}


def test_ocsf_json_and_parquet_of_either_version_are_one_view(tmp_path: Path) -> None:
    root = tmp_path / "log"
    configs = [
        ExporterConfig(name="json", format="ocsf-json", partitioning="hive", compression="zstd"),
        ExporterConfig(name="lake", format="ocsf-parquet", prefix="lake/", **LAKE),
        ExporterConfig(
            name="old", format="ocsf-parquet", prefix="old/", ocsf_version="1.1.0", **LAKE
        ),
    ]
    made = _export(tmp_path, DirectoryWriter(root), configs)
    result = _query(
        root,
        "SELECT metadata.uid, metadata.sequence, node, log, time_dt, class_uid, "
        "metadata.version, split_part(file, '/', 1) FROM ocsf",
    )
    for folder in ("ocsf", "lake", "old"):
        rows = sorted(r[:5] for r in result.rows if r[7] == folder)
        # OCSF keeps epoch milliseconds.
        assert rows == [(*m[:3], m[4], _milliseconds(m[5])) for m in made], folder
    assert {(r[3], r[5]) for r in result.rows} == {
        (log, 2004 if log == "findings" else 6003) for log in LOGS.values()
    }
    assert {(r[7], r[6]) for r in result.rows} == {
        ("ocsf", "1.8.0"),
        ("lake", "1.8.0"),
        ("old", "1.1.0"),
    }
    # A record read from JSON Lines and from Parquet: alike in every column, the
    # free-form ones JSON from both.
    same = _query(
        root,
        "SELECT count(*) FROM (SELECT * EXCLUDE (file) FROM ocsf WHERE file LIKE 'ocsf/%' "
        "EXCEPT ALL SELECT * EXCLUDE (file) FROM ocsf WHERE file LIKE 'lake/%')",
    )
    assert same.rows == ((0,),)
    free = _query(
        root,
        "SELECT DISTINCT typeof(unmapped), typeof(api.request.data), "
        "api.request.data->>'bucket_id' IS NOT NULL FROM ocsf WHERE class_uid = 6003",
    )
    assert free.rows == (("JSON", "JSON", True),)
    # eventDay= partitions prune like the others.
    since, until = DAYS[1] + OFFSETS[1], DAYS[1] + OFFSETS[2]
    ranged = _query(root, "SELECT metadata.uid, file FROM ocsf", since=since, until=until)
    assert sorted(uid for uid, _ in ranged.rows) == sorted(
        m[0] for m in _within(made, since, until) * 3
    )
    assert ranged.files_read == 3 * FILES_A_DAY
    days = {key.split("/")[3] for _, key in ranged.rows if not key.startswith("ocsf/")}
    assert days == {"eventDay=20270116"}


def _milliseconds(text: str) -> str:
    moment = datetime.datetime.fromisoformat(text)
    return _text(moment.replace(microsecond=moment.microsecond // 1000 * 1000))


def test_the_command_prints_a_table_json_lines_or_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "log"
    made = _export(tmp_path, DirectoryWriter(root), [ExporterConfig(name="x")], nodes=("n1",))
    sql = (
        "SELECT Sequence, log, time, json_object('b', Request.RequestParams->>'bucket_id') AS "
        "params, NULL AS nothing "
        "FROM events WHERE Sequence <= 3 ORDER BY Sequence"
    )
    command = ["events", "query", "--from", str(root), sql]
    assert main(command) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "Sequence  log          time                  params      nothing",
        '1         account_api  2027-01-15T00:00:00Z  {"b":"b0"}  NULL',
        '2         iam          2027-01-15T00:00:00Z  {"b":"b1"}  NULL',
        '3         settings     2027-01-15T00:00:00Z  {"b":"b2"}  NULL',
    ]
    assert err.startswith("3 rows; read 15 of 15 files (")
    assert len(err.splitlines()) == 1
    assert main([*command, "--json"]) == 0
    out, _ = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == [
        {
            "Sequence": s,
            "log": log,
            "time": "2027-01-15T00:00:00Z",
            "params": {"b": f"b{s - 1}"},
            "nothing": None,
        }
        for s, log in ((1, "account_api"), (2, "iam"), (3, "settings"))
    ]
    assert main([*command, "--csv"]) == 0
    out, _ = capsys.readouterr()
    assert list(csv.reader(io.StringIO(out)))[:2] == [
        ["Sequence", "log", "time", "params", "nothing"],
        ["1", "account_api", "2027-01-15T00:00:00Z", '{"b":"b0"}', ""],
    ]
    # A date as --until means through that day.
    day = "SELECT count(*) AS n, min(time) AS first, max(time) AS last FROM events"
    args = ["--csv", "--since", "2027-01-16", "--until", "2027-01-16"]
    assert main(["events", "query", "--from", str(root), *args, day]) == 0
    out, err = capsys.readouterr()
    on_the_day = [m for m in made if m[5].startswith("2027-01-16")]
    assert list(csv.reader(io.StringIO(out))) == [
        ["n", "first", "last"],
        [str(len(on_the_day)), "2027-01-16T00:00:00Z", "2027-01-16T23:59:59.999999Z"],
    ]
    assert err.startswith("1 rows; read 5 of 15 files")
    assert main([*command[:-1], "SELECT 1 AS n FROM range(5)", "--max-rows", "2"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["n", "1", "1"]
    assert err.startswith("2 rows, cut at --max-rows 2; read 15 of 15 files")


def test_a_bucket_is_read_through_a_temporary_copy(
    tmp_path: Path,
    seaweedfs: SeaweedFS,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    bucket = f"query-{uuid.uuid4().hex[:12]}"
    seaweedfs.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    url = f"s3://{bucket}/audit?endpoint={seaweedfs.endpoint}&region={seaweedfs.region}"
    configs = [
        ExporterConfig(name="x", partitioning="hive"),
        ExporterConfig(name="lake", format="ocsf-parquet", prefix="lake/", **LAKE),
    ]
    made = _export(tmp_path, open_writer(url), configs)
    since, until = DAYS[2], DAYS[2] + OFFSETS[2]
    result = _query(url, EVENTS, since=since, until=until)
    assert sorted(result.rows) == _within(made, since, until)
    assert result.files_listed == 2 * FILES_A_DAY * len(DAYS)
    assert result.files_read == 2 * FILES_A_DAY
    ocsf = _query(url, "SELECT count(*), count(DISTINCT node) FROM ocsf")
    assert ocsf.rows == ((len(made), len(NODES)),)
    sql = "SELECT count(*) AS n FROM events"
    assert main(["events", "query", "--from", url, "--json", sql]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"n": len(made)}
    assert "read 60 of 60 files" in err
    missing = f"s3://no-such-{bucket}?endpoint={seaweedfs.endpoint}"
    assert main(["events", "query", "--from", missing, sql]) == 1
    _, err = capsys.readouterr()
    assert err.startswith(f"auditline events query: cannot read {missing}: NoSuchBucket")
    assert len(err.splitlines()) == 1


def test_an_empty_location_has_every_view_empty(tmp_path: Path) -> None:
    for view in VIEWS:
        result = _query(tmp_path, f"SELECT count(*) FROM {view}")  # noqa: S608 - a view's name
        assert result.rows == ((0,),), view
        assert result.files_listed == result.files_read == 0
    columns = [c for (c,) in _query(tmp_path, "SELECT column_name FROM (DESCRIBE events)").rows]
    assert columns[:3] == ["EventName", "Version", "Request"]
    assert columns[-4:] == ["time", "log", "node", "file"]
    ocsf = {c for (c,) in _query(tmp_path, "SELECT column_name FROM (DESCRIBE ocsf)").rows}
    assert {"class_uid", "metadata", "unmapped", "finding_info", "time_dt", "file"} <= ocsf


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["SELEC 1"], 'Parser Error: syntax error at or near "SELEC"'),
        (["SELECT nope FROM events"], 'Binder Error: Referenced column "nope" not found'),
        (["DELETE FROM events"], "a query is one SELECT statement"),
        (["SELECT 1; SELECT 2"], "a query is one SELECT statement"),
        (["SELECT * FROM read_text('/etc/hostname')"], "Permission Error: Cannot access file"),
        (["--from", "/no/such/dir", "SELECT 1"], "/no/such/dir is not a directory"),
        (["--from", "s3://", "SELECT 1"], "an S3 location is s3://BUCKET"),
    ],
)
def test_an_error_is_one_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    where = [] if "--from" in args else ["--from", str(tmp_path)]
    assert main(["events", "query", *where, *args]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"auditline events query: {message}"), err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN ANALYZE COPY (SELECT 1 AS x WHERE false) TO '{path}' "
        "(FORMAT csv, HEADER false, USE_TMP_FILE false)",
        "EXPLAIN ANALYZE COPY (SELECT 'forged' AS EventName) TO '{path}' "
        "(FORMAT json, USE_TMP_FILE false)",
        "EXPLAIN SELECT 1",
    ],
)
def test_a_query_cannot_write_the_files_it_reads(tmp_path: Path, sql: str) -> None:
    """DuckDB's allowed paths are the exported files themselves, and it reads and
    writes them alike: `EXPLAIN ANALYZE` ran the COPY it explained, and emptied or
    forged a file of the log in place (found by a review helper). The files here are
    left writable, as a store that does not mark them read-only leaves them."""
    root = tmp_path / "log"
    _export(tmp_path, DirectoryWriter(root), [ExporterConfig(name="x")], nodes=("n1",))
    files = sorted(p for p in root.rglob("*.jsonl.gz") if "integrity" not in p.parts)
    before = {p: p.read_bytes() for p in files}
    for path in files:
        path.chmod(0o644)
    with pytest.raises(QueryError, match="a query is one SELECT statement"):
        _query(root, sql.format(path=files[0]))
    assert {p: p.read_bytes() for p in files} == before


def test_a_result_is_bounded_before_it_reaches_python(tmp_path: Path) -> None:
    """Rows come to Python in small batches until they reach `max_result_bytes` as
    JSON, and a row over it never does: turning a result into Python objects is
    outside DuckDB's caps (1,000 rows of 20,000-item lists took 1.7 GB and four times
    the timeout; found by a review helper)."""
    wide = "SELECT range(20000) AS r FROM range(1000)"
    result = _query(tmp_path, wide, max_rows=1000, max_result_bytes=1 << 20)
    assert result.truncated
    assert 1 <= len(result.rows) <= 10  # ~110 KB a row
    assert result.rows[0] == (list(range(20000)),)
    with pytest.raises(QueryLimitError, match="a row of the result is over 1048576 bytes"):
        _query(tmp_path, "SELECT range(1000000) AS r", max_result_bytes=1 << 20)
    # The statement is nested as written: its end may be a semicolon and a comment.
    assert _query(tmp_path, "SELECT 1 AS a; -- the end").rows == ((1,),)
    assert _query(tmp_path, "SELECT 1 AS a -- the end").rows == ((1,),)
    assert _query(tmp_path, "SELECT 2 AS a, 1 AS b ORDER BY b").columns == ("a", "b")


def test_a_query_is_bounded_by_its_timeout_and_byte_limit(tmp_path: Path) -> None:
    root = tmp_path / "log"
    _export(tmp_path, DirectoryWriter(root), [ExporterConfig(name="x")], nodes=("n1",))
    location = open_location(str(root))
    with pytest.raises(QueryError, match=r"ran longer than 0\.5 s"):
        query_exported(location, "SELECT count(*) FROM range(1000000000000)", timeout=0.5)
    with pytest.raises(QueryError, match=r"over the limit of 100$"):
        query_exported(location, "SELECT 1", max_bytes=100)
    assert query_exported(location, "SELECT count(*) FROM events", max_bytes=10**6).rows == (
        (len(DAYS) * len(OFFSETS) * len(LOGS),),
    )


def test_the_embedded_store_is_where_serve_exports_by_default(
    tmp_path: Path,
    serve: ServeFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert embedded_store({}) == "data/objects"
    assert embedded_store({"AUDITLINE_DATA_DIR": "/srv/d"}) == "/srv/d/objects"
    assert embedded_store({"AUDITLINE_OBJECT_STORE": "file:///o%20s"}) == "/o s"
    store = {"AUDITLINE_OBJECT_STORE": "s3://?endpoint=http://h:1&region=r"}
    assert embedded_store(store) == "s3://auditline-audit-logs?endpoint=http://h:1&region=r"
    assert embedded_store({**store, "AUDITLINE_AUDIT_BUCKET": "b"}).startswith("s3://b?")
    assert embedded_store({"AUDITLINE_EXPORT_TARGET": "s3://t?e=1"}) == "s3://t?e=1"
    # The real one: a node started, then stopped (which flushes its exporter).
    assert serve(data_dir=tmp_path / "data").terminate() == 0
    monkeypatch.setenv("AUDITLINE_DATA_DIR", str(tmp_path / "data"))
    # Every bucket of the node's store: the audit bucket, or any the target moved to.
    sql = "SELECT DISTINCT EventName, split_part(file, '/', 1) FROM events WHERE log = 'settings'"
    assert main(["events", "query", "--csv", sql]) == 0
    assert "AuditPolicyApplied,auditline-audit-logs" in capsys.readouterr().out.splitlines()
    monkeypatch.setenv("AUDITLINE_DATA_DIR", str(tmp_path / "nowhere"))
    assert main(["events", "query", sql]) == 1
    assert capsys.readouterr().err == (
        f"auditline events query: no log at {tmp_path}/nowhere/objects, the embedded store "
        "(no node here?): pass --from\n"
    )
