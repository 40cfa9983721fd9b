"""Logging out: a token ends at once, an admin ends an account's sessions, and every
logout (done or refused) is an IAM event (`slo`, `flo`)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from auditline.account.v1 import auth_pb2, bucket_pb2
from auditline.account.v1 import service_account_pb2 as sa_pb
from auditline.client import Client
from auditline.errors import NotFoundError, PermissionDeniedError, UnauthenticatedError
from auditline.server.iam import IAM_CODES
from tests.conftest import ServeFactory
from tests.support.cli import run_auditline
from tests.support.clients import login
from tests.support.exported import exported_events

KEY, SECRET = "AKLOGOUT", "logout-" + uuid.uuid4().hex
ENV = {"AUDITLINE_ADMIN_ACCESS_KEY": KEY, "AUDITLINE_ADMIN_SECRET_KEY": SECRET}


def _iam(data_dir: Path) -> list[tuple[str, str, int]]:
    return [
        (e["EventName"], e["IamCode"], e["Response"]["ResponseCode"])
        for e in exported_events(data_dir)
        if e["LogType"] == "LOG_TYPE_IAM"
    ]


def test_logout_ends_the_token_and_is_recorded(serve: ServeFactory) -> None:
    process = serve(env=ENV)
    admin = login(process.target, KEY, SECRET)
    created = admin.accounts.CreateServiceAccount(
        sa_pb.CreateServiceAccountRequest(
            service_account=sa_pb.ServiceAccount(display_name="leaver", role=sa_pb.ROLE_STANDARD)
        )
    )
    account = created.service_account
    first = login(process.target, account.access_key, created.secret_key, renew=False)
    second = login(process.target, account.access_key, created.secret_key, renew=False)
    assert first.auth.Logout(auth_pb2.LogoutRequest()).ended_sessions == 1
    with pytest.raises(UnauthenticatedError):
        first.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
    # The account's other session is untouched by that logout.
    second.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
    # A standard account may not end another account's sessions...
    with pytest.raises(PermissionDeniedError):
        second.auth.Logout(auth_pb2.LogoutRequest(service_account=admin_name(admin)))
    # ...an admin may, and a name that does not exist is refused.
    third = login(process.target, account.access_key, created.secret_key, renew=False)
    ended = admin.auth.Logout(auth_pb2.LogoutRequest(service_account=account.name))
    assert ended.ended_sessions == 2
    for client in (second, third):
        with pytest.raises(UnauthenticatedError):
            client.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
    with pytest.raises(NotFoundError):
        admin.auth.Logout(auth_pb2.LogoutRequest(service_account="serviceAccounts/nobody"))
    assert process.terminate() == 0
    iam = _iam(process.data_dir)
    assert [(n, c) for n, c, _ in iam if c in ("slo", "flo")] == [
        ("LogoutSuccess", "slo"),
        ("LogoutFailed", "flo"),
        ("LogoutSuccess", "slo"),
        ("LogoutFailed", "flo"),
    ]
    assert [code for _, c, code in iam if c == "flo"] == [7, 5]  # PERMISSION_DENIED, NOT_FOUND
    # Every IAM code the service wrote is one the catalog's table describes.
    assert {c for _, c, _ in iam} <= set(IAM_CODES)


def admin_name(admin: Client) -> str:
    accounts = admin.accounts.ListServiceAccounts(sa_pb.ListServiceAccountsRequest())
    (found,) = [a for a in accounts.service_accounts if a.access_key == KEY]
    return found.name


def test_the_cli_logs_out(serve: ServeFactory, tmp_path: Path) -> None:
    process = serve(env=ENV)
    env = {
        **os.environ,
        "AUDITLINE_TARGET": process.target,
        "AUDITLINE_CONFIG_DIR": str(tmp_path / "config"),
        "AUDITLINE_SECRET_KEY": SECRET,
    }

    def auditline(*args: str, code: int = 0) -> str:
        result = run_auditline(env, *args, code=code)
        return result.stdout + result.stderr

    auditline("login", "--access-key", KEY)
    sessions = tmp_path / "config" / "sessions.json"
    token = json.loads(sessions.read_text())[process.target]["token"]
    assert "1 session(s) ended" in auditline("logout")
    assert process.target not in json.loads(sessions.read_text())
    assert "not logged in" in auditline("bucket", "list", code=1)
    with Client(process.target, token=token) as old, pytest.raises(UnauthenticatedError):
        old.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
