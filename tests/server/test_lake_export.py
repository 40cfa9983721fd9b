"""The data lake end to end: `auditline serve` exporting OCSF Parquet in Security Lake's
layout (filesystem and SeaweedFS), OCSF 1.1.0, and the exporter settings in the API."""

from __future__ import annotations

import io
import re

import duckdb
import pyarrow.parquet as pq
import pytest
from google.protobuf import field_mask_pb2

from auditline.account.v1 import bucket_pb2
from auditline.audit.v1 import exporter_pb2
from auditline.errors import InvalidArgumentError
from auditline.interceptor._ocsf import class_schema
from tests.conftest import ServeFactory
from tests.interceptor.test_formats import _validator
from tests.support.clients import login
from tests.support.exported import exported_files, read_lines
from tests.support.integrity_checks import objects_dir, verifier_keys, verify
from tests.support.pipeline_calls import (
    ADMIN_KEY,
    ADMIN_SECRET,
    ENV,
    mixed_calls,
    s3_records,
    serve_on_seaweedfs,
)
from tests.support.seaweedfs import SeaweedFS

LAKE = ("--export-lake-region", "us-east-1", "--export-lake-account-id", "123456789012")
KEY = re.compile(
    r"region=us-east-1/accountId=123456789012/eventDay=\d{8}/"
    r"(account_api|iam|settings)-[^/]+-\d{12}-\d{12}\.parquet"
)


def test_ocsf_1_1_0_parquet_on_the_filesystem(serve: ServeFactory) -> None:
    process = serve(
        "--export-format", "ocsf-parquet", "--export-ocsf-version", "1.1.0", *LAKE, env=ENV
    )
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    made = mixed_calls(api, 10)
    assert process.terminate() == 0
    root = objects_dir(process.data_dir)
    files = [p for p in exported_files(process.data_dir) if p.suffix == ".parquet"]
    assert files
    records = []
    for path in files:
        assert KEY.fullmatch(path.relative_to(root).as_posix()), path
        table = pq.read_table(path)
        assert set(table.column("class_uid").to_pylist()) == {6003}
        records += read_lines(path.name, path.read_bytes())
    validator = _validator(6003, "1.1.0")
    for record in records:
        assert record["metadata"]["version"] == "1.1.0"
        assert not list(validator.iter_errors(record))
    sequences = sorted(r["metadata"]["sequence"] for r in records)
    assert sequences == list(range(1, len(sequences) + 1))
    calls = [
        (r["api"]["operation"], r["status_code"])
        for r in sorted(records, key=lambda r: r["metadata"]["sequence"])
        if r["api"]["service"]["name"] == "auditline.account.v1.BucketService"
    ]
    assert calls == made
    # DuckDB over the lake, partitions from the keys.
    ((count,),) = duckdb.execute(
        "SELECT count(*) FROM read_parquet(?, hive_partitioning = true) "
        "WHERE accountId = '123456789012'",
        [f"{root}/region=*/**/*.parquet"],
    ).fetchall()
    assert count == len(records)
    report = verify(root, verifier_keys(process.data_dir))
    assert report.ok, report.findings


@pytest.mark.seaweedfs
def test_ocsf_parquet_on_seaweedfs(serve: ServeFactory, seaweedfs: SeaweedFS) -> None:
    process, bucket = serve_on_seaweedfs(
        serve,
        seaweedfs,
        "lake",
        "--export-format",
        "ocsf-parquet",
        "--export-compression",
        "zstd",
        *LAKE,
    )
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    made = mixed_calls(api, 8)
    assert process.terminate() == 0
    files = s3_records(seaweedfs, bucket)
    assert files
    assert all(KEY.fullmatch(key) for key in files), sorted(files)
    client = seaweedfs.client()
    for key in files:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        metadata = pq.ParquetFile(io.BytesIO(body)).metadata
        assert metadata.row_group(0).column(0).compression == "ZSTD"
    records = sorted(
        (r for rs in files.values() for r in rs), key=lambda r: r["metadata"]["sequence"]
    )
    assert [r["metadata"]["sequence"] for r in records] == list(range(1, len(records) + 1))
    for record in records:
        assert not list(_validator(6003, "1.8.0").iter_errors(record))
    calls = [
        (r["api"]["operation"], r["status_code"])
        for r in records
        if r["api"]["service"]["name"] == "auditline.account.v1.BucketService"
    ]
    assert calls == made


def test_the_exporter_api_takes_the_lake_settings(serve: ServeFactory) -> None:
    process = serve(env=ENV)
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id="lake"))
    parquet = exporter_pb2.Exporter(
        display_name="security lake",
        bucket="lake",
        prefix="ext/auditline/",
        format=exporter_pb2.OUTPUT_FORMAT_OCSF_PARQUET,
        ocsf_version=exporter_pb2.OCSF_VERSION_1_1_0,
    )
    with pytest.raises(InvalidArgumentError) as refused:
        api.exporters.CreateExporter(exporter_pb2.CreateExporterRequest(exporter=parquet))
    assert refused.value.field_violations[0][0] == "exporter.lake_region"
    parquet.lake_region, parquet.lake_account_id = "us-east-1", "../etc"
    with pytest.raises(InvalidArgumentError):
        api.exporters.CreateExporter(exporter_pb2.CreateExporterRequest(exporter=parquet))
    parquet.lake_account_id = "123456789012"
    made = api.exporters.CreateExporter(
        exporter_pb2.CreateExporterRequest(exporter=parquet)
    ).exporter
    got = api.exporters.GetExporter(exporter_pb2.GetExporterRequest(name=made.name)).exporter
    assert got.format == exporter_pb2.OUTPUT_FORMAT_OCSF_PARQUET
    assert got.ocsf_version == exporter_pb2.OCSF_VERSION_1_1_0
    assert (got.lake_region, got.lake_account_id) == ("us-east-1", "123456789012")
    assert got.partitioning == exporter_pb2.PARTITIONING_DATE  # unset: the documented default
    hive = exporter_pb2.Exporter(name=made.name, partitioning=exporter_pb2.PARTITIONING_HIVE)
    updated = api.exporters.UpdateExporter(
        exporter_pb2.UpdateExporterRequest(
            exporter=hive, update_mask=field_mask_pb2.FieldMask(paths=["partitioning"])
        )
    ).exporter
    assert updated.partitioning == exporter_pb2.PARTITIONING_HIVE
    default = api.exporters.GetExporter(
        exporter_pb2.GetExporterRequest(name="exporters/default")
    ).exporter
    assert default.ocsf_version == exporter_pb2.OCSF_VERSION_1_8_0
    assert class_schema(6003, "1.1.0")["properties"]  # the version the exporter writes
