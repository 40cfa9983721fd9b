"""ExporterService: exporters beside the default one, validated, with live status."""

from __future__ import annotations

import uuid

import grpc
from google.protobuf import duration_pb2, field_mask_pb2

from auditline.account.v1 import bucket_pb2, service_account_pb2
from auditline.audit.v1 import exporter_pb2, exporter_pb2_grpc
from tests.conftest import ServeFactory
from tests.support.api import Api, code_of, error_of
from tests.support.exported import exported_files, read_lines

ADMIN = {
    "AUDITLINE_ADMIN_ACCESS_KEY": "AKEXPORT",
    "AUDITLINE_ADMIN_SECRET_KEY": "export-" + uuid.uuid4().hex,
}
Code = grpc.StatusCode


def test_exporter_lifecycle(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    api = Api(process.target).login_as_admin(ADMIN)
    stub = exporter_pb2_grpc.ExporterServiceStub(api.channel)
    bucket = f"siem-{uuid.uuid4().hex[:10]}"
    api.call(
        api.buckets.CreateBucket, bucket_pb2.CreateBucketRequest(bucket_id=bucket, immutable=True)
    )
    created = api.call(
        stub.CreateExporter,
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
        ),
    ).exporter
    assert created.name == "exporters/siem"
    assert created.status.state == exporter_pb2.EXPORTER_STATE_WAITING

    listed = api.call(stub.ListExporters, exporter_pb2.ListExportersRequest()).exporters
    assert [e.name for e in listed] == ["exporters/default", "exporters/siem"]

    missing = error_of(
        lambda: api.call(
            stub.CreateExporter,
            exporter_pb2.CreateExporterRequest(
                exporter=exporter_pb2.Exporter(display_name="x", bucket="no-such-bucket")
            ),
        )
    )
    assert missing.code() == Code.NOT_FOUND
    assert "buckets/no-such-bucket does not exist" in (missing.details() or "")
    assert (
        code_of(
            lambda: api.call(
                stub.CreateExporter,
                exporter_pb2.CreateExporterRequest(
                    exporter=exporter_pb2.Exporter(display_name="y")
                ),
            )
        )
        == Code.INVALID_ARGUMENT
    )
    assert (
        code_of(
            lambda: api.call(
                stub.DeleteExporter, exporter_pb2.DeleteExporterRequest(name="exporters/default")
            )
        )
        == Code.FAILED_PRECONDITION
    )

    updated = api.call(
        stub.UpdateExporter,
        exporter_pb2.UpdateExporterRequest(
            exporter=exporter_pb2.Exporter(name="exporters/siem", prefix="audit/"),
            update_mask=field_mask_pb2.FieldMask(paths=["prefix"]),
        ),
    ).exporter
    assert updated.prefix == "audit/"
    assert updated.format == exporter_pb2.OUTPUT_FORMAT_OCSF_JSON

    api.call(api.buckets.ListBuckets, bucket_pb2.ListBucketsRequest())
    assert process.terminate() == 0
    files = exported_files(process.data_dir, bucket)
    assert files
    assert all(p.name.endswith(".jsonl.zst") for p in files)
    records = [r for p in files for r in read_lines(p.name, p.read_bytes())]
    assert {r["class_uid"] for r in records} == {6003}
    operations = {r["api"]["operation"] for r in records}
    assert {"CreateExporter", "ListBuckets"} <= operations


def test_exporters_survive_a_restart_and_can_be_deleted(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    api = Api(process.target).login_as_admin(ADMIN)
    stub = exporter_pb2_grpc.ExporterServiceStub(api.channel)
    bucket = f"keep-{uuid.uuid4().hex[:10]}"
    api.call(api.buckets.CreateBucket, bucket_pb2.CreateBucketRequest(bucket_id=bucket))
    api.call(
        stub.CreateExporter,
        exporter_pb2.CreateExporterRequest(
            exporter_id="keep", exporter=exporter_pb2.Exporter(display_name="keep", bucket=bucket)
        ),
    )
    assert process.terminate() == 0
    again = serve(env=ADMIN, data_dir=process.data_dir)
    api = Api(again.target).login_as_admin(ADMIN)
    stub = exporter_pb2_grpc.ExporterServiceStub(api.channel)
    got = api.call(stub.GetExporter, exporter_pb2.GetExporterRequest(name="exporters/keep"))
    assert got.exporter.bucket == bucket
    api.call(stub.DeleteExporter, exporter_pb2.DeleteExporterRequest(name="exporters/keep"))
    assert (
        code_of(
            lambda: api.call(
                stub.GetExporter, exporter_pb2.GetExporterRequest(name="exporters/keep")
            )
        )
        == Code.NOT_FOUND
    )


def test_auditors_read_exporters_but_do_not_change_them(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    api = Api(process.target).login_as_admin(ADMIN)
    created = api.call(
        api.accounts.CreateServiceAccount,
        service_account_pb2.CreateServiceAccountRequest(
            service_account=service_account_pb2.ServiceAccount(
                display_name="auditor", role=service_account_pb2.ROLE_AUDITOR
            )
        ),
    )
    auditor = Api(process.target).login(created.service_account.access_key, created.secret_key)
    stub = exporter_pb2_grpc.ExporterServiceStub(auditor.channel)
    default = auditor.call(
        stub.GetExporter, exporter_pb2.GetExporterRequest(name="exporters/default")
    ).exporter
    assert default.bucket == "auditline-audit-logs"
    assert code_of(
        lambda: auditor.call(
            stub.CreateExporter,
            exporter_pb2.CreateExporterRequest(
                exporter=exporter_pb2.Exporter(display_name="z", bucket="auditline-audit-logs")
            ),
        )
    ) == (Code.PERMISSION_DENIED)
