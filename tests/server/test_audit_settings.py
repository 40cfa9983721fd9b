"""AuditSettingsService: the immutable-target rule, roles, and what reaches the bucket."""

from __future__ import annotations

import contextlib
import functools
import uuid

import grpc
import pytest

from auditline.account.v1 import auth_pb2, bucket_pb2, service_account_pb2
from auditline.audit.v1 import settings_pb2
from auditline.client import Client
from auditline.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from tests.conftest import ServeFactory
from tests.support.clients import login, login_as_admin
from tests.support.exported import DEFAULT_BUCKET, exported_events, exported_files
from tests.support.outcome import at_once, code_of
from tests.support.postgres import PostgreSQL

ADMIN = {
    "AUDITLINE_ADMIN_ACCESS_KEY": "AKSETTINGS",
    "AUDITLINE_ADMIN_SECRET_KEY": "settings-" + uuid.uuid4().hex,
}
Code = grpc.StatusCode


def _bucket(client: Client, immutable: bool) -> str:
    name = f"s-{uuid.uuid4().hex[:12]}"
    client.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=name, immutable=immutable))
    return name


def _login_as(admin: Client, target: str, role: service_account_pb2.Role.ValueType) -> Client:
    created = admin.accounts.CreateServiceAccount(
        service_account_pb2.CreateServiceAccountRequest(
            service_account=service_account_pb2.ServiceAccount(
                display_name=f"r-{uuid.uuid4().hex[:8]}", role=role
            )
        )
    )
    return login(target, created.service_account.access_key, created.secret_key)


def test_only_immutable_buckets_may_be_the_target(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    admin = login_as_admin(process.target, ADMIN)
    settings = admin.settings
    current = settings.GetAuditSettings(settings_pb2.GetAuditSettingsRequest()).settings
    assert current.account_audit_logs_enabled
    assert current.target_bucket == DEFAULT_BUCKET
    plain = _bucket(admin, immutable=False)
    with pytest.raises(FailedPreconditionError) as target:
        settings.SetAuditTargetBucket(settings_pb2.SetAuditTargetBucketRequest(target_bucket=plain))
    with pytest.raises(FailedPreconditionError) as enable:
        settings.EnableAccountAuditLogs(
            settings_pb2.EnableAccountAuditLogsRequest(target_bucket=plain)
        )
    for error in (target.value, enable.value):
        assert "only immutable (object-locked) buckets" in error.details()
    with pytest.raises(NotFoundError):
        settings.SetAuditTargetBucket(
            settings_pb2.SetAuditTargetBucketRequest(target_bucket="no-such-bucket")
        )
    with pytest.raises(InvalidArgumentError):
        settings.SetAuditTargetBucket(
            settings_pb2.SetAuditTargetBucketRequest(target_bucket="Bad_Name")
        )


def test_the_auditor_reads_but_does_not_change(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    admin = login_as_admin(process.target, ADMIN)
    auditor = _login_as(admin, process.target, service_account_pb2.ROLE_AUDITOR).settings
    assert auditor.GetAuditSettings(settings_pb2.GetAuditSettingsRequest()).settings
    with pytest.raises(PermissionDeniedError):
        auditor.EnableAccountAuditLogs(settings_pb2.EnableAccountAuditLogsRequest())
    with pytest.raises(PermissionDeniedError):
        auditor.DisableAccountAuditLogs(settings_pb2.DisableAccountAuditLogsRequest())
    with pytest.raises(PermissionDeniedError):
        auditor.SetAuditTargetBucket(
            settings_pb2.SetAuditTargetBucketRequest(target_bucket=DEFAULT_BUCKET)
        )
    with pytest.raises(PermissionDeniedError):
        auditor.EnableBucketAuditLogging(
            settings_pb2.EnableBucketAuditLoggingRequest(bucket=DEFAULT_BUCKET)
        )
    with pytest.raises(PermissionDeniedError):
        auditor.DisableBucketAuditLogging(
            settings_pb2.DisableBucketAuditLoggingRequest(bucket=DEFAULT_BUCKET)
        )


def test_bucket_audit_logging_is_recorded_and_reported(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    admin = login_as_admin(process.target, ADMIN)
    name = _bucket(admin, immutable=False)
    on = admin.settings.EnableBucketAuditLogging(
        settings_pb2.EnableBucketAuditLoggingRequest(bucket=name)
    ).settings
    assert name in on.audited_buckets
    bucket = admin.buckets.GetBucket(bucket_pb2.GetBucketRequest(name=f"buckets/{name}")).bucket
    assert bucket.audit_logging_enabled
    off = admin.settings.DisableBucketAuditLogging(
        settings_pb2.DisableBucketAuditLoggingRequest(bucket=name)
    ).settings
    assert name not in off.audited_buckets
    with pytest.raises(NotFoundError):
        admin.settings.EnableBucketAuditLogging(
            settings_pb2.EnableBucketAuditLoggingRequest(bucket="missing-bucket")
        )


def test_target_changes_and_disabling_decide_what_reaches_the_bucket(
    serve: ServeFactory, audit_process: str
) -> None:
    # With an audit worker, the call after the switch reaches the worker after the
    # notice of it, and is judged by when it came, not when the worker saw it.
    process = serve("--export-interval", "0.2", "--audit-process", audit_process, env=ADMIN)
    admin = login_as_admin(process.target, ADMIN)
    new_target = _bucket(admin, immutable=True)
    changed = admin.settings.SetAuditTargetBucket(
        settings_pb2.SetAuditTargetBucketRequest(target_bucket=new_target)
    ).settings
    assert changed.target_bucket == new_target
    assert changed.updated_by == "admin"
    marker_on = f"on-{uuid.uuid4().hex[:8]}"
    with contextlib.suppress(NotFoundError):
        admin.buckets.GetBucket(bucket_pb2.GetBucketRequest(name=f"buckets/{marker_on}"))
    disabled = admin.settings.DisableAccountAuditLogs(
        settings_pb2.DisableAccountAuditLogsRequest()
    ).settings
    assert not disabled.account_audit_logs_enabled
    assert disabled.target_bucket == new_target  # still visible
    marker_off = f"off-{uuid.uuid4().hex[:8]}"
    with contextlib.suppress(NotFoundError):
        admin.buckets.GetBucket(bucket_pb2.GetBucketRequest(name=f"buckets/{marker_off}"))
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
    admin = login_as_admin(process.target, ADMIN)
    admin.settings.EnableAccountAuditLogs(settings_pb2.EnableAccountAuditLogsRequest())
    admin.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
    admin.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=admin.token), timeout=30)
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
    """admin: everything; auditor: the reads; standard: nothing. (tests/server/test_roles.py
    checks every method of the contract against the guard's own table.)"""
    from auditline.audit.v1 import audit_log_pb2, exporter_pb2

    process = serve(env=ADMIN)
    admin = login_as_admin(process.target, ADMIN)
    immutable = _bucket(admin, immutable=True)
    callers = {
        "admin": admin,
        "auditor": _login_as(admin, process.target, service_account_pb2.ROLE_AUDITOR),
        "standard": _login_as(admin, process.target, service_account_pb2.ROLE_STANDARD),
    }
    reads = [
        ("settings", "GetAuditSettings", settings_pb2.GetAuditSettingsRequest()),
        ("exporters", "ListExporters", exporter_pb2.ListExportersRequest()),
        ("exporters", "GetExporter", exporter_pb2.GetExporterRequest(name="exporters/default")),
        ("events", "ListEvents", audit_log_pb2.ListEventsRequest()),
        ("events", "GetEventCatalog", audit_log_pb2.GetEventCatalogRequest()),
        ("events", "GetVerifierKeys", audit_log_pb2.GetVerifierKeysRequest()),
    ]
    writes = [
        (
            "settings",
            "SetAuditTargetBucket",
            settings_pb2.SetAuditTargetBucketRequest(target_bucket=immutable),
        ),
        ("settings", "EnableAccountAuditLogs", settings_pb2.EnableAccountAuditLogsRequest()),
        (
            "settings",
            "EnableBucketAuditLogging",
            settings_pb2.EnableBucketAuditLoggingRequest(bucket=immutable),
        ),
        (
            "settings",
            "DisableBucketAuditLogging",
            settings_pb2.DisableBucketAuditLoggingRequest(bucket=immutable),
        ),
        (
            "exporters",
            "CreateExporter",
            exporter_pb2.CreateExporterRequest(
                exporter=exporter_pb2.Exporter(
                    display_name=f"e-{uuid.uuid4().hex[:6]}",
                    bucket=immutable,
                    prefix=f"e-{uuid.uuid4().hex[:6]}/",
                )
            ),
        ),
    ]
    for role, client in callers.items():
        for group, allowed_roles in ((reads, {"admin", "auditor"}), (writes, {"admin"})):
            for service, method, request in group:
                call = getattr(getattr(client, service), method)
                if method == "CreateExporter" and role == "admin":
                    request.exporter.display_name = f"e-{uuid.uuid4().hex[:6]}"  # type: ignore[attr-defined]
                code = code_of(lambda c=call, r=request: c(r))  # type: ignore[misc]
                expected = Code.OK if role in allowed_roles else Code.PERMISSION_DENIED
                assert code == expected, (role, method, code)
    # Disabling comes last for admin: the others were checked while logs were on.
    for role, client in callers.items():
        code = code_of(
            lambda c=client: c.settings.DisableAccountAuditLogs(  # type: ignore[misc]
                settings_pb2.DisableAccountAuditLogsRequest()
            )
        )
        assert code == (Code.OK if role == "admin" else Code.PERMISSION_DENIED)


def test_a_bucket_is_never_deleted_as_it_becomes_the_target(
    serve: ServeFactory, postgres: PostgreSQL
) -> None:
    """On PostgreSQL, with concurrent transactions: the target was set to a bucket a
    concurrent DeleteBucket removed, both answered OK, and no replica's audit files
    left it again (found by a review helper, with two replicas)."""
    process = serve("--database-url", postgres.new_database(), env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    for _ in range(4):
        bucket = f"t-{uuid.uuid4().hex[:10]}"
        api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=bucket, immutable=True))
        target = settings_pb2.SetAuditTargetBucketRequest(target_bucket=bucket)
        delete = bucket_pb2.DeleteBucketRequest(name=f"buckets/{bucket}")
        outcomes = at_once(
            functools.partial(api.settings.SetAuditTargetBucket, target),
            functools.partial(api.buckets.DeleteBucket, delete),
        )
        assert outcomes != ["OK", "OK"]
        now = api.settings.GetAuditSettings(settings_pb2.GetAuditSettingsRequest()).settings
        # The target is a bucket that exists (NOT_FOUND otherwise).
        api.buckets.GetBucket(bucket_pb2.GetBucketRequest(name=f"buckets/{now.target_bucket}"))
