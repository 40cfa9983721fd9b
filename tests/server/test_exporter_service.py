"""ExporterService: exporters beside the default one, validated, with live status."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import uuid
from collections.abc import Callable

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from auditline.account.v1 import bucket_pb2, service_account_pb2
from auditline.audit.v1 import exporter_pb2, settings_pb2
from auditline.client import Client
from auditline.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from tests.conftest import ServeFactory
from tests.support.clients import login, login_as_admin
from tests.support.exported import exported_files, read_lines
from tests.support.integrity_checks import verifier_keys, verify
from tests.support.outcome import at_once, code_of
from tests.support.postgres import PostgreSQL
from tests.support.processes import wait_for

ADMIN = {
    "AUDITLINE_ADMIN_ACCESS_KEY": "AKEXPORT",
    "AUDITLINE_ADMIN_SECRET_KEY": "export-" + uuid.uuid4().hex,
}


def test_exporter_lifecycle(serve: ServeFactory, audit_process: str) -> None:
    process = serve("--audit-process", audit_process, "--state-poll-interval", "0.5", env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    stub = api.exporters
    bucket = f"siem-{uuid.uuid4().hex[:10]}"
    api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=bucket, immutable=True))
    created = stub.CreateExporter(
        exporter_pb2.CreateExporterRequest(
            exporter_id="siem",
            exporter=exporter_pb2.Exporter(
                display_name="System log to SIEM",
                bucket=bucket,
                prefix="logs/",
                format=exporter_pb2.OUTPUT_FORMAT_OCSF_JSON,
                compression=exporter_pb2.COMPRESSION_ZSTD,
                flush_interval=duration_pb2.Duration(seconds=1),
            ),
        )
    ).exporter
    assert created.name == "exporters/siem"
    if audit_process == "serving":
        assert created.status.state == exporter_pb2.EXPORTER_STATE_WAITING
    else:
        # It runs in the audit worker: its status is not known here until the worker
        # reports it (each state poll), then it is that report.
        assert created.status.state in (
            exporter_pb2.EXPORTER_STATE_UNSPECIFIED,
            exporter_pb2.EXPORTER_STATE_WAITING,
        )

        def reported() -> exporter_pb2.Exporter | None:
            got = stub.GetExporter(exporter_pb2.GetExporterRequest(name="exporters/siem"))
            known = got.exporter.status.state != exporter_pb2.EXPORTER_STATE_UNSPECIFIED
            return got.exporter if known else None

        shown = wait_for(reported, timeout=30, what="the worker's report of the exporter")
        (mine,) = shown.node_statuses
        assert shown.status == mine.status

    listed = stub.ListExporters(exporter_pb2.ListExportersRequest()).exporters
    assert [e.name for e in listed] == ["exporters/default", "exporters/siem"]

    with pytest.raises(NotFoundError) as missing:
        stub.CreateExporter(
            exporter_pb2.CreateExporterRequest(
                exporter=exporter_pb2.Exporter(display_name="x", bucket="no-such-bucket")
            )
        )
    assert "buckets/no-such-bucket does not exist" in missing.value.details()
    with pytest.raises(InvalidArgumentError):
        stub.CreateExporter(
            exporter_pb2.CreateExporterRequest(exporter=exporter_pb2.Exporter(display_name="y"))
        )
    with pytest.raises(FailedPreconditionError):
        stub.DeleteExporter(exporter_pb2.DeleteExporterRequest(name="exporters/default"))
    # One bucket and prefix, one exporter: two would write files and manifests of the
    # same names (found by a review helper: the second never committed).
    with pytest.raises(FailedPreconditionError) as taken:
        stub.CreateExporter(
            exporter_pb2.CreateExporterRequest(
                exporter=exporter_pb2.Exporter(display_name="twin", bucket=bucket, prefix="logs/")
            )
        )
    assert "exporters/siem already writes to this bucket and prefix" in taken.value.details()
    # The default exporter's name is no way around it (it is in no table to clash).
    with pytest.raises(FailedPreconditionError) as taken:
        stub.CreateExporter(
            exporter_pb2.CreateExporterRequest(
                exporter=exporter_pb2.Exporter(
                    display_name="default (set by flags)", bucket="auditline-audit-logs"
                )
            )
        )
    assert "exporters/default already writes" in taken.value.details()

    root = process.data_dir / "objects" / bucket / "objects"
    wait_for(
        lambda: any((root / "logs").rglob("*.zst")) or None,
        timeout=30,
        what="a file under the first prefix",
    )
    updated = stub.UpdateExporter(
        exporter_pb2.UpdateExporterRequest(
            exporter=exporter_pb2.Exporter(name="exporters/siem", prefix="audit/"),
            update_mask=field_mask_pb2.FieldMask(paths=["prefix"]),
        )
    ).exporter
    assert updated.prefix == "audit/"
    assert updated.format == exporter_pb2.OUTPUT_FORMAT_OCSF_JSON

    def under_the_new_prefix() -> bool | None:
        api.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
        return any((root / "audit").rglob("*.zst")) or None

    # A call a second: the worker takes the new prefix at its next state poll.
    wait_for(under_the_new_prefix, timeout=30, what="a file under the new prefix", interval=1)
    assert process.terminate() == 0
    files = exported_files(process.data_dir, bucket)
    assert files
    assert all(p.name.endswith(".jsonl.zst") for p in files)
    records = [r for p in files for r in read_lines(p.name, p.read_bytes())]
    # API Activity, and the detections' finding of the exporter changed (made by the
    # engine's last poll as the node stops, if not before).
    assert {r["class_uid"] for r in records} <= {6003, 2004}
    findings = {r["finding_info"]["title"] for r in records if r["class_uid"] == 2004}
    assert findings <= {"auditline exporter deleted or changed"}
    operations = {r["api"]["operation"] for r in records if r["class_uid"] == 6003}
    assert {"CreateExporter", "ListBuckets"} <= operations
    # Each prefix holds a log of its own, the second begun where the first ended: it
    # verified as cut while the spool took the exporter's log to be wherever it wrote.
    report = verify(root, verifier_keys(process.data_dir))
    assert report.findings == []
    assert {node.prefix for node in report.nodes} == {"logs/", "audit/"}


def _exporter_to_a_new_bucket(api: Client, exporter_id: str) -> str:
    """A new bucket and an exporter `exporter_id` writing to it; the bucket's name."""
    bucket = f"{exporter_id}-{uuid.uuid4().hex[:10]}"
    api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=bucket))
    api.exporters.CreateExporter(
        exporter_pb2.CreateExporterRequest(
            exporter_id=exporter_id,
            exporter=exporter_pb2.Exporter(display_name=exporter_id, bucket=bucket),
        )
    )
    return bucket


def test_an_exporter_made_here_runs_without_state_polling(
    serve: ServeFactory, audit_process: str
) -> None:
    # `--state-poll-interval 0` only stops following other replicas' changes: this
    # node's own apply at once, in the serving process or in its audit worker.
    process = serve("--audit-process", audit_process, "--state-poll-interval", "0", env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    bucket = _exporter_to_a_new_bucket(api, "now")
    api.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
    assert process.terminate() == 0
    assert exported_files(process.data_dir, bucket)


def test_exporters_survive_a_restart_and_can_be_deleted(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    bucket = _exporter_to_a_new_bucket(api, "keep")
    assert process.terminate() == 0
    again = serve(env=ADMIN, data_dir=process.data_dir)
    stub = login_as_admin(again.target, ADMIN).exporters
    got = stub.GetExporter(exporter_pb2.GetExporterRequest(name="exporters/keep"))
    assert got.exporter.bucket == bucket
    stub.DeleteExporter(exporter_pb2.DeleteExporterRequest(name="exporters/keep"))
    with pytest.raises(NotFoundError):
        stub.GetExporter(exporter_pb2.GetExporterRequest(name="exporters/keep"))


def test_an_exporter_deleted_while_a_node_was_down_is_forgotten_there(
    serve: ServeFactory,
) -> None:
    """Deleted on another replica while this one was down (here: its row deleted while
    the node is stopped), its watermark stayed in this node's spool for good: the
    spool frees only what every watermark has passed, so it filled and this node
    refused every call (found by a review helper)."""
    process = serve(env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    _exporter_to_a_new_bucket(api, "gone")
    assert process.terminate() == 0
    spool = process.data_dir / "audit" / "spool.db"
    with contextlib.closing(sqlite3.connect(spool)) as db:
        assert ("gone",) in db.execute("SELECT exporter FROM watermarks").fetchall()
    with contextlib.closing(sqlite3.connect(process.data_dir / "auditline.db")) as db, db:
        db.execute("DELETE FROM exporters WHERE id = 'gone'")
    again = serve(env=ADMIN, data_dir=process.data_dir)
    login_as_admin(again.target, ADMIN)
    assert again.terminate() == 0
    with contextlib.closing(sqlite3.connect(spool)) as db:
        assert db.execute("SELECT exporter FROM watermarks").fetchall() == [("default",)]


def test_the_audit_target_cannot_move_onto_another_exporters_destination(
    serve: ServeFactory,
) -> None:
    """The audit target is the default exporter's bucket: moved onto one where a saved
    exporter writes under the same prefix, their files and manifests collided and
    that bucket's log no longer verified (found by a review helper)."""
    process = serve(env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    bucket = f"taken-{uuid.uuid4().hex[:10]}"
    api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=bucket, immutable=True))
    api.exporters.CreateExporter(
        exporter_pb2.CreateExporterRequest(
            exporter_id="siem", exporter=exporter_pb2.Exporter(display_name="siem", bucket=bucket)
        )
    )
    for move in (
        lambda: api.settings.SetAuditTargetBucket(
            settings_pb2.SetAuditTargetBucketRequest(target_bucket=bucket)
        ),
        lambda: api.settings.EnableAccountAuditLogs(
            settings_pb2.EnableAccountAuditLogsRequest(target_bucket=bucket)
        ),
    ):
        with pytest.raises(FailedPreconditionError) as taken:
            move()
        assert "exporters/siem already writes to this bucket and prefix" in taken.value.details()
    assert (
        api.settings.GetAuditSettings(settings_pb2.GetAuditSettingsRequest()).settings.target_bucket
        != bucket
    )


def test_auditors_read_exporters_but_do_not_change_them(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    created = api.accounts.CreateServiceAccount(
        service_account_pb2.CreateServiceAccountRequest(
            service_account=service_account_pb2.ServiceAccount(
                display_name="auditor", role=service_account_pb2.ROLE_AUDITOR
            )
        )
    )
    auditor = login(process.target, created.service_account.access_key, created.secret_key)
    stub = auditor.exporters
    default = stub.GetExporter(exporter_pb2.GetExporterRequest(name="exporters/default")).exporter
    assert default.bucket == "auditline-audit-logs"
    with pytest.raises(PermissionDeniedError):
        stub.CreateExporter(
            exporter_pb2.CreateExporterRequest(
                exporter=exporter_pb2.Exporter(display_name="z", bucket="auditline-audit-logs")
            )
        )


def _create_at(
    api: Client,
    name: str,
    bucket: str,
    prefix: str,
    together: threading.Barrier,
    codes: list[str],
) -> None:
    together.wait(30)
    try:
        api.exporters.CreateExporter(
            exporter_pb2.CreateExporterRequest(
                exporter=exporter_pb2.Exporter(display_name=name, bucket=bucket, prefix=prefix)
            )
        )
        codes.append("OK")
    except FailedPreconditionError:
        codes.append("FAILED_PRECONDITION")


def test_exporters_changed_at_once_on_postgresql_stay_consistent(
    serve: ServeFactory, postgres: PostgreSQL
) -> None:
    """Concurrent transactions (replicas, or one node's threads): two creates of one
    destination both passed the check, and two updates of other fields each wrote
    back the row as read, losing one (found by a review helper, with two replicas)."""
    process = serve("--database-url", postgres.new_database(), env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    bucket = f"race-{uuid.uuid4().hex[:10]}"
    api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=bucket))
    for round_ in range(3):
        together = threading.Barrier(2)
        codes: list[str] = []
        prefix = f"r{round_}/"
        threads = [
            threading.Thread(
                target=_create_at, args=(api, f"x{round_}{n}", bucket, prefix, together, codes)
            )
            for n in "ab"
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(codes) == ["FAILED_PRECONDITION", "OK"]
    name = api.exporters.ListExporters(exporter_pb2.ListExportersRequest()).exporters[1].name
    together = threading.Barrier(2)
    changes = [
        (exporter_pb2.Exporter(name=name, max_file_bytes=123_456), "max_file_bytes"),
        (exporter_pb2.Exporter(name=name, display_name="renamed"), "display_name"),
    ]

    def update(exporter: exporter_pb2.Exporter, path: str) -> None:
        together.wait(30)
        api.exporters.UpdateExporter(
            exporter_pb2.UpdateExporterRequest(
                exporter=exporter, update_mask=field_mask_pb2.FieldMask(paths=[path])
            )
        )

    threads = [threading.Thread(target=update, args=change) for change in changes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    got = api.exporters.GetExporter(exporter_pb2.GetExporterRequest(name=name)).exporter
    assert (got.max_file_bytes, got.display_name) == (123_456, "renamed")


def test_updates_at_once_never_merge_into_an_invalid_exporter(
    serve: ServeFactory, postgres: PostgreSQL
) -> None:
    """Each update was checked alone and then merged into the row as it stood: one
    making the format ocsf-parquet and one clearing the lake region both passed, and
    left an exporter that could not run (found by a review helper)."""
    process = serve("--database-url", postgres.new_database(), env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    bucket = f"merge-{uuid.uuid4().hex[:10]}"
    api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=bucket))
    for round_ in range(4):
        name = api.exporters.CreateExporter(
            exporter_pb2.CreateExporterRequest(
                exporter=exporter_pb2.Exporter(
                    display_name=f"m{round_}",
                    bucket=bucket,
                    prefix=f"m{round_}/",
                    format=exporter_pb2.OUTPUT_FORMAT_OCSF_JSON,
                    lake_region="eu-1",
                    lake_account_id="acct",
                )
            )
        ).exporter.name

        def update(path: str, name: str = name, **fields: object) -> Callable[[], object]:
            request = exporter_pb2.UpdateExporterRequest(
                exporter=exporter_pb2.Exporter(name=name, **fields),  # type: ignore[arg-type]
                update_mask=field_mask_pb2.FieldMask(paths=[path]),
            )
            return functools.partial(api.exporters.UpdateExporter, request)

        outcomes = at_once(
            update("format", format=exporter_pb2.OUTPUT_FORMAT_OCSF_PARQUET),
            update("lake_region", lake_region=""),
        )
        assert outcomes.count("OK") >= 1, outcomes
        got = api.exporters.GetExporter(exporter_pb2.GetExporterRequest(name=name)).exporter
        assert not (got.format == exporter_pb2.OUTPUT_FORMAT_OCSF_PARQUET and not got.lake_region)


def test_the_audit_target_and_an_exporter_never_move_onto_one_destinationat_once(
    serve: ServeFactory, postgres: PostgreSQL
) -> None:
    """The audit target's check against other exporters ran outside the transaction
    that moved it: an exporter made at once on that bucket and prefix passed its own
    check too (found by a review helper)."""
    process = serve("--database-url", postgres.new_database(), env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    for round_ in range(4):
        bucket = f"both-{uuid.uuid4().hex[:10]}"
        api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=bucket, immutable=True))
        outcomes = at_once(
            functools.partial(
                api.settings.SetAuditTargetBucket,
                settings_pb2.SetAuditTargetBucketRequest(target_bucket=bucket),
            ),
            functools.partial(
                api.exporters.CreateExporter,
                exporter_pb2.CreateExporterRequest(
                    exporter=exporter_pb2.Exporter(display_name=f"b{round_}", bucket=bucket)
                ),
            ),
        )
        assert outcomes.count("OK") == 1, outcomes


def test_a_bucket_an_exporter_writes_to_is_never_deleted(
    serve: ServeFactory, postgres: PostgreSQL
) -> None:
    """DeleteBucket did not look at the exporters: one made at once, or just made and
    yet to write, lost its bucket and failed for good, and every node's spool kept all
    it had not exported (found by a review helper)."""
    process = serve("--database-url", postgres.new_database(), env=ADMIN)
    api = login_as_admin(process.target, ADMIN)

    def delete(bucket: str) -> Callable[[], object]:
        request = bucket_pb2.DeleteBucketRequest(name=f"buckets/{bucket}")
        return functools.partial(api.buckets.DeleteBucket, request)

    for round_ in range(6):
        bucket = f"gone-{uuid.uuid4().hex[:10]}"
        api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=bucket))
        create = exporter_pb2.CreateExporterRequest(
            exporter=exporter_pb2.Exporter(display_name=f"g{round_}", bucket=bucket)
        )
        outcomes = at_once(functools.partial(api.exporters.CreateExporter, create), delete(bucket))
        assert outcomes.count("OK") == 1, outcomes
        if outcomes[0] == "OK":  # made: its bucket stays while it writes there
            assert code_of(delete(bucket)) == grpc.StatusCode.FAILED_PRECONDITION
