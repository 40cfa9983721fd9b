"""AuditSettingsService: the immutable-target rule, roles, and what reaches the bucket."""

from __future__ import annotations

import uuid

import grpc

from auditline.account.v1 import auth_pb2, bucket_pb2, service_account_pb2
from auditline.audit.v1 import settings_pb2, settings_pb2_grpc
from tests.conftest import ServeFactory
from tests.support.api import Api, code_of, error_of
from tests.support.exported import DEFAULT_BUCKET, exported_events, exported_files

ADMIN = {
    "AUDITLINE_ADMIN_ACCESS_KEY": "AKSETTINGS",
    "AUDITLINE_ADMIN_SECRET_KEY": "settings-" + uuid.uuid4().hex,
}
Code = grpc.StatusCode


def _admin(target: str) -> tuple[Api, settings_pb2_grpc.AuditSettingsServiceStub]:
    api = Api(target).login_as_admin(ADMIN)
    return api, settings_pb2_grpc.AuditSettingsServiceStub(api.channel)


def _bucket(api: Api, immutable: bool) -> str:
    name = f"s-{uuid.uuid4().hex[:12]}"
    api.call(
        api.buckets.CreateBucket,
        bucket_pb2.CreateBucketRequest(bucket_id=name, immutable=immutable),
    )
    return name


def test_only_immutable_buckets_may_be_the_target(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    api, settings = _admin(process.target)
    current = api.call(settings.GetAuditSettings, settings_pb2.GetAuditSettingsRequest()).settings
    assert current.account_audit_logs_enabled
    assert current.target_bucket == DEFAULT_BUCKET
    plain = _bucket(api, immutable=False)
    for call in (
        lambda: api.call(
            settings.SetAuditTargetBucket,
            settings_pb2.SetAuditTargetBucketRequest(target_bucket=plain),
        ),
        lambda: api.call(
            settings.EnableAccountAuditLogs,
            settings_pb2.EnableAccountAuditLogsRequest(target_bucket=plain),
        ),
    ):
        error = error_of(call)
        assert error.code() == Code.FAILED_PRECONDITION
        assert "only immutable (object-locked) buckets" in (error.details() or "")
    assert (
        code_of(
            lambda: api.call(
                settings.SetAuditTargetBucket,
                settings_pb2.SetAuditTargetBucketRequest(target_bucket="no-such-bucket"),
            )
        )
        == Code.NOT_FOUND
    )
    assert (
        code_of(
            lambda: api.call(
                settings.SetAuditTargetBucket,
                settings_pb2.SetAuditTargetBucketRequest(target_bucket="Bad_Name"),
            )
        )
        == Code.INVALID_ARGUMENT
    )


def test_the_auditor_reads_but_does_not_change(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    api, _ = _admin(process.target)
    created = api.call(
        api.accounts.CreateServiceAccount,
        service_account_pb2.CreateServiceAccountRequest(
            service_account=service_account_pb2.ServiceAccount(
                display_name="auditor", role=service_account_pb2.ROLE_AUDITOR
            )
        ),
    )
    auditor = Api(process.target).login(created.service_account.access_key, created.secret_key)
    stub = settings_pb2_grpc.AuditSettingsServiceStub(auditor.channel)
    assert auditor.call(stub.GetAuditSettings, settings_pb2.GetAuditSettingsRequest()).settings
    for method, request in (
        (stub.EnableAccountAuditLogs, settings_pb2.EnableAccountAuditLogsRequest()),
        (stub.DisableAccountAuditLogs, settings_pb2.DisableAccountAuditLogsRequest()),
        (
            stub.SetAuditTargetBucket,
            settings_pb2.SetAuditTargetBucketRequest(target_bucket=DEFAULT_BUCKET),
        ),
        (
            stub.EnableBucketAuditLogging,
            settings_pb2.EnableBucketAuditLoggingRequest(bucket=DEFAULT_BUCKET),
        ),
        (
            stub.DisableBucketAuditLogging,
            settings_pb2.DisableBucketAuditLoggingRequest(bucket=DEFAULT_BUCKET),
        ),
    ):
        assert code_of(lambda m=method, r=request: auditor.call(m, r)) == (  # type: ignore[misc]
            Code.PERMISSION_DENIED
        )


def test_bucket_audit_logging_is_recorded_and_reported(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    api, settings = _admin(process.target)
    name = _bucket(api, immutable=False)
    on = api.call(
        settings.EnableBucketAuditLogging, settings_pb2.EnableBucketAuditLoggingRequest(bucket=name)
    ).settings
    assert name in on.audited_buckets
    bucket = api.call(
        api.buckets.GetBucket, bucket_pb2.GetBucketRequest(name=f"buckets/{name}")
    ).bucket
    assert bucket.audit_logging_enabled
    off = api.call(
        settings.DisableBucketAuditLogging,
        settings_pb2.DisableBucketAuditLoggingRequest(bucket=name),
    ).settings
    assert name not in off.audited_buckets
    assert (
        code_of(
            lambda: api.call(
                settings.EnableBucketAuditLogging,
                settings_pb2.EnableBucketAuditLoggingRequest(bucket="missing-bucket"),
            )
        )
        == Code.NOT_FOUND
    )


def test_target_changes_and_disabling_decide_what_reaches_the_bucket(
    serve: ServeFactory,
) -> None:
    process = serve("--export-interval", "0.2", env=ADMIN)
    api, settings = _admin(process.target)
    new_target = _bucket(api, immutable=True)
    changed = api.call(
        settings.SetAuditTargetBucket,
        settings_pb2.SetAuditTargetBucketRequest(target_bucket=new_target),
    ).settings
    assert changed.target_bucket == new_target
    assert changed.updated_by == "admin"
    marker_on = f"on-{uuid.uuid4().hex[:8]}"
    code_of(
        lambda: api.call(
            api.buckets.GetBucket, bucket_pb2.GetBucketRequest(name=f"buckets/{marker_on}")
        )
    )
    disabled = api.call(
        settings.DisableAccountAuditLogs, settings_pb2.DisableAccountAuditLogsRequest()
    ).settings
    assert not disabled.account_audit_logs_enabled
    assert disabled.target_bucket == new_target  # still visible
    marker_off = f"off-{uuid.uuid4().hex[:8]}"
    code_of(
        lambda: api.call(
            api.buckets.GetBucket, bucket_pb2.GetBucketRequest(name=f"buckets/{marker_off}")
        )
    )
    assert process.terminate() == 0
    events = exported_events(process.data_dir, new_target)
    names = [e["Request"]["RequestParams"].get("name", "") for e in events]
    assert f"buckets/{marker_on}" in names
    assert f"buckets/{marker_off}" not in names  # written while disabled: not saved
    settings_log = [e for e in events if e["LogType"] == "LOG_TYPE_SETTINGS"]
    assert [e["EventName"] for e in settings_log][-1] == "DisableAccountAuditLogs"
    keys = [p.parts for p in exported_files(process.data_dir, new_target)]
    assert any("settings" in parts for parts in keys)
    assert any("account_api" in parts for parts in keys)


def test_the_three_logs_land_in_the_bucket(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    api, settings = _admin(process.target)
    api.call(settings.EnableAccountAuditLogs, settings_pb2.EnableAccountAuditLogsRequest())
    api.call(api.buckets.ListBuckets, bucket_pb2.ListBucketsRequest())
    api.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=api.token), timeout=30)
    assert process.terminate() == 0
    events = exported_events(process.data_dir)
    iam = {
        (e["EventName"], e["IamCode"], e["Method"])
        for e in events
        if e["LogType"] == "LOG_TYPE_IAM"
    }
    assert {("LoginSuccess", "s", "Authenticate"), ("TokenValidated", "tv", "ValidateToken")} <= iam
    assert {e["LogType"] for e in events} == {
        "LOG_TYPE_ACCOUNT_API",
        "LOG_TYPE_IAM",
        "LOG_TYPE_SETTINGS",
    }
    dirs = {
        p.relative_to(process.data_dir / "objects" / DEFAULT_BUCKET / "objects").parts[1]
        for p in exported_files(process.data_dir)
    }
    assert dirs == {"account_api", "iam", "settings"}


def test_each_role_on_each_audit_method(serve: ServeFactory) -> None:
    """admin: everything; auditor: the reads; standard: nothing."""
    from auditline.audit.v1 import (
        audit_log_pb2,
        audit_log_pb2_grpc,
        exporter_pb2,
        exporter_pb2_grpc,
    )

    process = serve(env=ADMIN)
    admin, _ = _admin(process.target)
    immutable = _bucket(admin, immutable=True)

    def login_as(role: service_account_pb2.Role.ValueType) -> Api:
        created = admin.call(
            admin.accounts.CreateServiceAccount,
            service_account_pb2.CreateServiceAccountRequest(
                service_account=service_account_pb2.ServiceAccount(
                    display_name=f"r-{uuid.uuid4().hex[:8]}", role=role
                )
            ),
        )
        return Api(process.target).login(created.service_account.access_key, created.secret_key)

    callers = {
        "admin": admin,
        "auditor": login_as(service_account_pb2.ROLE_AUDITOR),
        "standard": login_as(service_account_pb2.ROLE_STANDARD),
    }
    reads = [
        ("AuditSettingsService", "GetAuditSettings", settings_pb2.GetAuditSettingsRequest()),
        ("ExporterService", "ListExporters", exporter_pb2.ListExportersRequest()),
        (
            "ExporterService",
            "GetExporter",
            exporter_pb2.GetExporterRequest(name="exporters/default"),
        ),
        ("AuditLogService", "ListEvents", audit_log_pb2.ListEventsRequest()),
        ("AuditLogService", "GetEventCatalog", audit_log_pb2.GetEventCatalogRequest()),
        ("AuditLogService", "GetVerifierKeys", audit_log_pb2.GetVerifierKeysRequest()),
    ]
    writes = [
        (
            "AuditSettingsService",
            "SetAuditTargetBucket",
            settings_pb2.SetAuditTargetBucketRequest(target_bucket=immutable),
        ),
        (
            "AuditSettingsService",
            "EnableAccountAuditLogs",
            settings_pb2.EnableAccountAuditLogsRequest(),
        ),
        (
            "AuditSettingsService",
            "EnableBucketAuditLogging",
            settings_pb2.EnableBucketAuditLoggingRequest(bucket=immutable),
        ),
        (
            "AuditSettingsService",
            "DisableBucketAuditLogging",
            settings_pb2.DisableBucketAuditLoggingRequest(bucket=immutable),
        ),
        (
            "ExporterService",
            "CreateExporter",
            exporter_pb2.CreateExporterRequest(
                exporter=exporter_pb2.Exporter(
                    display_name=f"e-{uuid.uuid4().hex[:6]}", bucket=immutable
                )
            ),
        ),
    ]
    stubs = {
        "AuditSettingsService": settings_pb2_grpc.AuditSettingsServiceStub,
        "ExporterService": exporter_pb2_grpc.ExporterServiceStub,
        "AuditLogService": audit_log_pb2_grpc.AuditLogServiceStub,
    }
    for role, api in callers.items():
        for group, allowed_roles in ((reads, {"admin", "auditor"}), (writes, {"admin"})):
            for service, method, request in group:
                stub = stubs[service](api.channel)
                if method == "CreateExporter" and role == "admin":
                    request.exporter.display_name = f"e-{uuid.uuid4().hex[:6]}"  # type: ignore[attr-defined]
                code = code_of(
                    lambda s=stub, m=method, r=request, a=api: (  # type: ignore[misc]
                        a.call(getattr(s, m), r)
                    )
                )
                expected = Code.OK if role in allowed_roles else Code.PERMISSION_DENIED
                assert code == expected, (role, method, code)
    # Disabling comes last for admin: the others were checked while logs were on.
    for role, api in callers.items():
        stub = settings_pb2_grpc.AuditSettingsServiceStub(api.channel)
        code = code_of(
            lambda s=stub, a=api: a.call(  # type: ignore[misc]
                s.DisableAccountAuditLogs, settings_pb2.DisableAccountAuditLogsRequest()
            )
        )
        assert code == (Code.OK if role == "admin" else Code.PERMISSION_DENIED)
