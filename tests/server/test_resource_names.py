"""A bucket is named the same way in every call: its name (`x`) or its resource name
(`buckets/x`), and a refusal says which forms a field takes."""

from __future__ import annotations

import pytest

from auditline.account.v1 import permission_pb2
from auditline.audit.v1 import exporter_pb2, settings_pb2
from auditline.errors import InvalidArgumentError
from tests.support.account_server import Server, new_bucket, new_name, new_permission


def test_every_call_that_takes_a_bucket_takes_its_resource_name(server: Server) -> None:
    admin = server.admin
    bucket = new_bucket(admin, immutable=True)
    resource = f"buckets/{bucket}"
    settings = admin.settings.EnableBucketAuditLogging(
        settings_pb2.EnableBucketAuditLoggingRequest(bucket=resource)
    ).settings
    assert bucket in settings.audited_buckets
    admin.settings.DisableBucketAuditLogging(
        settings_pb2.DisableBucketAuditLoggingRequest(bucket=resource)
    )
    before = admin.settings.GetAuditSettings(settings_pb2.GetAuditSettingsRequest()).settings
    try:
        target = admin.settings.SetAuditTargetBucket(
            settings_pb2.SetAuditTargetBucketRequest(target_bucket=resource)
        ).settings
        assert target.target_bucket == bucket  # kept as the name, as before
    finally:
        admin.settings.SetAuditTargetBucket(
            settings_pb2.SetAuditTargetBucketRequest(target_bucket=before.target_bucket)
        )
    exporter = admin.exporters.CreateExporter(
        exporter_pb2.CreateExporterRequest(
            exporter=exporter_pb2.Exporter(display_name=new_name("exp"), bucket=resource)
        )
    ).exporter
    assert exporter.bucket == bucket
    admin.exporters.DeleteExporter(exporter_pb2.DeleteExporterRequest(name=exporter.name))
    permission = new_permission(
        admin,
        bucket_scope=permission_pb2.BUCKET_SCOPE_NAMES,
        bucket_names=[resource, bucket],  # the same bucket twice: kept once
    )
    assert list(permission.bucket_names) == [bucket]


@pytest.mark.parametrize("value", ["buckets/Bad_Name", "Bad_Name", "buckets/"])
def test_a_bad_bucket_says_which_forms_the_field_takes(server: Server, value: str) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        server.admin.settings.SetAuditTargetBucket(
            settings_pb2.SetAuditTargetBucketRequest(target_bucket=value)
        )
    ((field, problem),) = refused.value.field_violations
    assert field == "target_bucket"
    assert "takes a bucket name (my-bucket) or its resource name (buckets/my-bucket)" in problem
