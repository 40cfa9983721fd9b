"""The `ocsf-parquet` format against Amazon Security Lake's rules for a custom source's
objects, read back with pyarrow and DuckDB, every row validated against the OCSF
schema of its version, and the files proved by the integrity manifests."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings

from auditline.audit.v1 import event_pb2
from auditline.interceptor import DirectoryWriter, Exporter, ExporterConfig, Spool
from auditline.interceptor._compression import decompress
from auditline.interceptor._formats import apievent_dict, render
from auditline.interceptor._leaf import event_leaf, read_line
from auditline.interceptor._ocsf import OCSF_VERSIONS, WRITTEN_ATTRIBUTES, class_schema
from auditline.interceptor._ocsf_parquet import (
    DATA_PAGE_BYTES,
    arrow_schema,
    column_line,
    parquet_file,
)
from auditline.interceptor.integrity import LocalDirectory, Notary, SigningKey, Verifier
from tests.interceptor.test_formats import events
from tests.support.parquet_pages import page_sizes

LAKE = {"lake_region": "eu-west-1", "lake_account_id": "123456789012"}
KEY = re.compile(
    r"lake/region=eu-west-1/accountId=123456789012/eventDay=(\d{8})/"
    r"(account_api|iam|findings)-n-\d{12}-\d{12}\.parquet"
)
DAY_NS = 86_400 * 10**9
START_NS = 1_800_000_000 * 10**9  # 2027-01-15


def _event(i: int, log_type: int, at_ns: int) -> event_pb2.ApiEvent:
    event = event_pb2.ApiEvent(
        event_name="Detection" if log_type == event_pb2.LOG_TYPE_FINDINGS else f"Call{i % 7}",
        version="2",
        event_id=f"e{i}",
        node_id="n",
        service="auditline.account.v1.BucketService",
        method="CreateBucket",
        activity=1,  # type: ignore[arg-type]
        log_type=log_type,  # type: ignore[arg-type]
        trace_id="0af7651916cd43dd8448eb211c80319c" if i % 2 else "",
        span_id="b7ad6b7169203331" if i % 2 else "",
    )
    request, response = event.request, event.response
    request.account_name = "admin" if i % 3 else ""
    request.user_agent = "grpc-python/1.85.1"
    request.source_ip, request.source_port = "10.1.2.3", 40000 + i
    request.request_time.FromNanoseconds(at_ns)
    response.response_time.FromNanoseconds(at_ns + 1_000_000)
    response.response_code = 0 if i % 4 else 5
    response.response_status = "OK" if i % 4 else "NOT_FOUND"
    if log_type == event_pb2.LOG_TYPE_FINDINGS:
        request.request_params.update(
            {"rule": {"id": "r1", "title": "Brute force", "level": "high"}, "events": ["e1"]}
        )
    else:
        # Big enough that some columns need several 1 MiB pages.
        request.request_params.update({"bucket_id": f"b{i}", "note": "x" * 600, "n": i})
        response.response_body.update({"bucket": {"name": f"buckets/b{i}", "size": 1.5}})
    return event


def _export(tmp_path: Path, version: str, events: int = 3000) -> tuple[Path, SigningKey]:
    spool = Spool(tmp_path / "spool.db", node_id="n")
    # Out of time order within the batch, over two days: the file's rows are sorted.
    for i in range(events):
        log_type = (event_pb2.LOG_TYPE_ACCOUNT_API, event_pb2.LOG_TYPE_IAM)[i % 2]
        spool.emit(_event(i, log_type, START_NS + (events - i) * 1_000_000))
    spool.emit(_event(events, event_pb2.LOG_TYPE_FINDINGS, START_NS + 5))
    for i in range(events + 1, events + 11):  # a second batch, a day later
        spool.emit(_event(i, event_pb2.LOG_TYPE_ACCOUNT_API, START_NS + DAY_NS + i))
    assert spool.flush(30)
    key = SigningKey.generate("test/n")
    root = tmp_path / "lake-files"
    exporter = Exporter(
        ExporterConfig(
            name="lake",
            format="ocsf-parquet",
            compression="zstd",
            prefix="lake/",
            ocsf_version=version,
            max_file_bytes=64 * 1024 * 1024,
            **LAKE,  # type: ignore[arg-type]
        ),
        spool,
        DirectoryWriter(root),
        node_id="n",
        notary=Notary(key=key, origin="test/n", node_id="n"),
    )
    exporter.export_once()  # the first day's events
    exporter.export_once()  # the second day's
    assert not exporter.export_once()
    spool.close()
    return root, key


def _parquet_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*.parquet"))
        if "integrity" not in p.parts
    }


@pytest.mark.parametrize("version", OCSF_VERSIONS)
def test_parquet_files_follow_security_lakes_rules(tmp_path: Path, version: str) -> None:
    root, key = _export(tmp_path, version)
    files = _parquet_files(root)
    days = {KEY.fullmatch(k).group(1) for k in files}  # type: ignore[union-attr]
    assert days == {"20270115", "20270116"}, sorted(files)
    assert {KEY.fullmatch(k).group(2) for k in files} == {"account_api", "iam", "findings"}  # type: ignore[union-attr]
    several_pages = False
    total = 0
    for name, data in files.items():
        parquet = pq.ParquetFile(io.BytesIO(data))
        metadata = parquet.metadata
        assert metadata.num_row_groups == 1
        assert metadata.row_group(0).total_byte_size <= 256 * 1024 * 1024
        for column in range(metadata.num_columns):
            assert metadata.row_group(0).column(column).compression == "ZSTD"
        sizes = page_sizes(data)
        assert all(size <= DATA_PAGE_BYTES for pages in sizes.values() for size in pages), name
        several_pages |= any(len(pages) > 1 for pages in sizes.values())
        table = parquet.read()
        classes = set(table.column("class_uid").to_pylist())
        assert len(classes) == 1, name  # one OCSF class per object
        assert classes == ({2004} if "/findings-" in name else {6003})
        times = [t for t in table.column("time").to_pylist() if t is not None]
        assert len(times) == table.num_rows
        assert times == sorted(times), name  # sorted by time
        assert metadata.row_group(0).sorting_columns  # and says so
        assert table.schema.metadata[b"ocsf_version"] == version.encode()
        # Every row, turned back into JSON, is a valid record of its class and version.
        for line in decompress(name, data).splitlines():
            record = orjson.loads(line)
            validator = jsonschema.Draft202012Validator(class_schema(record["class_uid"], version))
            errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(record)]
            assert not errors, errors[:5]
            assert record["metadata"]["version"] == version
        total += metadata.num_rows
    assert several_pages  # the page bound was exercised, not vacuous
    assert total == 3011
    # DuckDB reads the lake as Athena would: nested columns, partitions from the path.
    rows = duckdb.execute(
        "SELECT eventDay, count(*), min(metadata.sequence), max(metadata.sequence) "
        "FROM read_parquet(?, hive_partitioning = true) GROUP BY eventDay ORDER BY eventDay",
        [f"{root}/lake/**/*.parquet"],
    ).fetchall()
    assert [(str(r[0]), r[1], r[2], r[3]) for r in rows] == [
        ("20270115", 3001, 1, 3001),
        ("20270116", 10, 3002, 3011),
    ]
    # The manifests prove the Parquet files like any other.
    report = Verifier(LocalDirectory(root), [key.verifier]).run()
    assert report.findings == [], report.findings
    assert report.events == 3011


def test_a_changed_parquet_file_is_found(tmp_path: Path) -> None:
    root, key = _export(tmp_path, "1.8.0", events=20)
    name = next(iter(_parquet_files(root)))
    path = root / name
    table = pq.read_table(path)
    # Rewrite one row's operation: a valid Parquet file that is not the one listed.
    records = table.to_pylist()
    records[0]["api"]["operation"] = "NothingHappened"
    pq.write_table(type(table).from_pylist(records, schema=table.schema), path)
    report = Verifier(LocalDirectory(root), [key.verifier]).run()
    assert {f.kind for f in report.findings} >= {"modified-file"}


def test_the_columns_come_from_the_ocsf_class() -> None:
    for version in OCSF_VERSIONS:
        for class_uid, written in WRITTEN_ATTRIBUTES.items():
            schema = class_schema(class_uid, version)
            arrow = arrow_schema(class_uid, version)
            # Every required attribute of the class is a column.
            assert set(schema["required"]) <= set(arrow.names), (class_uid, version)
            # Each column's type is the class's: `time` a timestamp (epoch ms, 64-bit), ...
            assert str(arrow.field("time").type) == "int64"
            assert str(arrow.field("metadata").type.field("version").type) == "string"
            # ... and the free-form attributes are JSON text.
            assert arrow.field("unmapped").metadata == {b"ocsf_type": b"json"}
            names = {path.split(".")[0] for path in written}
            assert set(arrow.names) <= names
    # 1.1.0 has no `actor.app_name` nor the trace profile: no such columns.
    old = arrow_schema(6003, "1.1.0")
    assert "trace" not in old.names
    assert "app_name" not in [f.name for f in old.field("actor").type]
    assert "trace" in arrow_schema(6003, "1.8.0").names


def test_an_attribute_without_a_column_is_refused_not_dropped() -> None:
    record: dict[str, Any] = {"class_uid": 6003, "time": 1, "metadata": {"sequence": 1}}
    record["actor"] = {"user": {"name": "a", "email_addr": "a@example.com"}}
    with pytest.raises(ValueError, match="email_addr"):
        parquet_file([column_line(record, "1.8.0")], version="1.8.0", compression="zstd")


# The shipped schemas as compiled from github.com/ocsf/ocsf-schema (see ocsf/README.md):
# the product derives its columns from them and the tests validate against them, so an
# edit to one must not go unseen.
SCHEMA_SHA256 = {
    "1.1.0/api_activity.schema.json": (
        "94abd2a25cddfa849aab1fe19daff723e5a7b51fcbd15ab682bc4ae1401ce545"
    ),
    "1.8.0/api_activity.schema.json": (
        "705f67de76084f5dea684ee3cc587c052527c8bf923c48d145c6fa83c58a4283"
    ),
    "1.8.0/detection_finding.schema.json": (
        "11d3ba9af8287fbe0a29ca102399c9f1aaae8e50d8963efbf7692291aa74b0cb"
    ),
}


def test_the_shipped_ocsf_schemas_are_the_compiled_ones() -> None:
    import auditline.interceptor

    folder = Path(auditline.interceptor.__file__).parent / "ocsf"
    found = {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*.schema.json")
    }
    assert found == SCHEMA_SHA256


@pytest.mark.parametrize("version", OCSF_VERSIONS)
@settings(max_examples=100, deadline=None)
@given(event=events())
def test_any_event_comes_back_from_parquet_exactly(version: str, event: event_pb2.ApiEvent) -> None:
    """Whatever an event holds (bodies of any JSON, empty strings, big numbers), its row
    read back is its record: the leaf recomputed from Parquet is the event's."""
    line = render("ocsf-json", event, version)
    data = parquet_file(
        [render("ocsf-parquet", event, version)], version=version, compression="zstd"
    )
    (back,) = decompress("x.parquet", data).splitlines()
    assert orjson.loads(back) == orjson.loads(line)
    assert event_leaf(read_line("ocsf-parquet", back)) == event_leaf(apievent_dict(event))
