"""The export pipeline end to end: calls → spool → exporter → files in a locked bucket."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from auditline.audit.v1 import exporter_pb2
from auditline.errors import FailedPreconditionError
from tests.conftest import ServeFactory
from tests.interceptor.test_formats import _validator
from tests.support.clients import login
from tests.support.exported import DEFAULT_BUCKET, event_of, exported_events
from tests.support.pipeline_calls import (
    ADMIN_KEY,
    ADMIN_SECRET,
    ENV,
    check_complete,
    mixed_calls,
    s3_records,
    serve_on_seaweedfs,
)
from tests.support.seaweedfs import SeaweedFS
from tests.support.serve import ServeProcess


def test_every_call_lands_in_the_exported_files_in_order(serve: ServeFactory) -> None:
    process = serve(env=ENV)
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    made = mixed_calls(api, 30)
    assert process.terminate() == 0  # a graceful stop flushes every exporter
    events = exported_events(process.data_dir)
    check_complete(events)
    calls = [
        (e["Method"], e["Response"]["ResponseStatus"])
        for e in events
        if e["Service"] == "auditline.account.v1.BucketService"
    ]
    assert calls == made
    assert {status for _, status in made} == {"OK", "NOT_FOUND", "INVALID_ARGUMENT"}
    iam = [e for e in events if e["LogType"] == "LOG_TYPE_IAM"]
    assert [e["EventName"] for e in iam] == ["LoginSuccess"]
    # The log type is in the object key as well as in each record.
    keys = [
        p.relative_to(process.data_dir / "objects" / DEFAULT_BUCKET / "objects").as_posix()
        for p in (process.data_dir / "objects" / DEFAULT_BUCKET / "objects").rglob("*.gz")
    ]
    assert any(k.startswith("apievent/iam/") for k in keys)
    assert any(k.startswith("apievent/account_api/") for k in keys)


def test_hive_partitioned_keys(serve: ServeFactory) -> None:
    process = serve("--export-partitioning", "hive", env=ENV)
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    made = mixed_calls(api, 5)
    assert process.terminate() == 0
    root = process.data_dir / "objects" / DEFAULT_BUCKET / "objects"
    keys = [p.relative_to(root).as_posix() for p in root.rglob("*.gz")]
    assert keys
    for key in keys:
        folders = key.split("/")
        assert [f.split("=")[0] for f in folders[2:5]] == ["year", "month", "day"], key
    events = exported_events(process.data_dir)
    check_complete(events)
    assert len([e for e in events if e["Service"] == "auditline.account.v1.BucketService"]) == len(
        made
    )


@pytest.mark.seaweedfs
@pytest.mark.parametrize("mode", ["governance", "compliance"])
def test_ocsf_zstd_files_on_seaweedfs_validate_and_are_locked(
    serve: ServeFactory, seaweedfs: SeaweedFS, mode: str
) -> None:
    process, bucket = serve_on_seaweedfs(
        serve,
        seaweedfs,
        "audit",
        "--export-format",
        "ocsf-json",
        "--export-compression",
        "zstd",
        *(("--export-retention-mode", mode) if mode != "governance" else ()),
    )
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    made = mixed_calls(api, 12)
    assert process.terminate() == 0
    files = s3_records(seaweedfs, bucket)
    assert files
    assert all(key.startswith("ocsf/") and key.endswith(".jsonl.zst") for key in files)
    records = sorted(
        (r for rs in files.values() for r in rs), key=lambda r: r["metadata"]["sequence"]
    )
    assert [r["metadata"]["sequence"] for r in records] == list(range(1, len(records) + 1))
    for record in records:
        assert not list(_validator().iter_errors(record))
    calls = [
        (r["api"]["operation"], r["status_code"])
        for r in records
        if r["api"]["service"]["name"] == "auditline.account.v1.BucketService"
    ]
    assert calls == made
    # Every file carries object-lock retention; deleting one is refused.
    client = seaweedfs.client()
    key = next(iter(files))
    retention = client.get_object_retention(Bucket=bucket, Key=key)["Retention"]
    assert retention["Mode"] == mode.upper()  # governance is the default
    version = client.head_object(Bucket=bucket, Key=key)["VersionId"]
    with pytest.raises(ClientError):
        client.delete_object(Bucket=bucket, Key=key, VersionId=version)


@pytest.mark.seaweedfs
def test_an_external_s3_target(serve: ServeFactory, seaweedfs: SeaweedFS) -> None:
    bucket = f"siem-{uuid.uuid4().hex[:10]}"
    seaweedfs.client().create_bucket(Bucket=bucket)
    env = ENV | seaweedfs.aws_env
    target = f"s3://{bucket}?endpoint={seaweedfs.endpoint}&region=us-east-1"
    process = serve("--export-target", target, "--export-retention-days", "0", env=env)
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    made = mixed_calls(api, 6)
    # The default exporter is shown, and checked against others, where it writes (it
    # was at the audit target's bucket: an exporter there was refused, and one onto
    # this target let through; found by a review helper).
    default = api.exporters.GetExporter(
        exporter_pb2.GetExporterRequest(name="exporters/default")
    ).exporter
    assert (default.bucket, default.external_s3.bucket) == ("", bucket)
    onto = exporter_pb2.ExternalS3Target(endpoint=seaweedfs.endpoint, bucket=bucket)
    with pytest.raises(FailedPreconditionError, match="exporters/default already writes"):
        api.exporters.CreateExporter(
            exporter_pb2.CreateExporterRequest(
                exporter=exporter_pb2.Exporter(display_name="onto", external_s3=onto)
            )
        )
    api.exporters.CreateExporter(
        exporter_pb2.CreateExporterRequest(
            exporter=exporter_pb2.Exporter(display_name="audit bucket", bucket=DEFAULT_BUCKET)
        )
    )
    assert process.terminate() == 0
    records = sorted(
        (event_of(r) for rs in s3_records(seaweedfs, bucket).values() for r in rs),
        key=lambda e: int(e["Sequence"]),
    )
    check_complete(records)
    calls = [
        (e["Method"], e["Response"]["ResponseStatus"])
        for e in records
        if e["Service"] == "auditline.account.v1.BucketService"
    ]
    assert calls == made


def test_a_missing_external_target_fails_at_start(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    env = ENV | seaweedfs.aws_env
    process = ServeProcess(
        tmp_path / "data",
        args=["--export-target", f"s3://no-such-bucket-xyz?endpoint={seaweedfs.endpoint}"],
        env=env,
    )
    with pytest.raises(RuntimeError, match="NoSuchBucket"):
        process.start()
