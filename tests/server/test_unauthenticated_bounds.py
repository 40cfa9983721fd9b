"""What an unauthenticated caller can make the service write: credentials longer than any
the service makes or takes are refused INVALID_ARGUMENT before any lookup, so they reach
neither the database nor the IAM log; the refusal is audited like any call."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from auditline.account.v1 import auth_pb2
from auditline.client import Client
from auditline.server.accounts import Accounts
from auditline.server.db import Database, tables
from auditline.server.identity import (
    MAX_ACCESS_KEY_CHARS,
    MAX_SECRET_KEY_CHARS,
    MAX_TOKEN_CHARS,
)
from tests.conftest import ServeFactory
from tests.support.clients import login_as_admin
from tests.support.exported import exported_events
from tests.support.outcome import code_of, error_of

ADMIN = {
    "AUDITLINE_ADMIN_ACCESS_KEY": "AKBOUNDS",
    "AUDITLINE_ADMIN_SECRET_KEY": "bounds-" + uuid.uuid4().hex,
}
Code = grpc.StatusCode


def _login_failure_keys(data_dir: Path) -> list[str]:
    """The access keys of the failed logins the service keeps (to block brute force)."""
    with sqlite3.connect(data_dir / "auditline.db") as connection:
        return [key for (key,) in connection.execute("SELECT access_key FROM login_failures")]


def _violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    violations: list[tuple[str, str]] = getattr(error, "field_violations", [])
    return violations


def test_over_long_credentials_are_refused_before_any_lookup_and_audited(
    serve: ServeFactory,
) -> None:
    process = serve(env=ADMIN)
    anonymous = Client(process.target)  # calls without a token
    auth = anonymous.auth
    longest = "K" * MAX_ACCESS_KEY_CHARS
    too_long = "L" * (MAX_ACCESS_KEY_CHARS + 1)
    huge = "H" * 1_000_000
    # The longest key the service takes is looked up (and fails) as any other.
    assert (
        code_of(
            lambda: auth.Authenticate(
                auth_pb2.AuthenticateRequest(access_key=longest, secret_key="x"), timeout=30
            )
        )
        == Code.UNAUTHENTICATED
    )
    # Past it: refused, as many times as a brute force would need to be blocked.
    attempts = 12
    for key in [too_long] * (attempts - 1) + [huge]:
        error = error_of(
            lambda key=key: auth.Authenticate(  # type: ignore[misc]
                auth_pb2.AuthenticateRequest(access_key=key, secret_key="x"), timeout=30
            )
        )
        assert error.code() == Code.INVALID_ARGUMENT
        assert _violations(error) == [
            ("access_key", f"must be at most {MAX_ACCESS_KEY_CHARS} characters")
        ]
    error = error_of(
        lambda: auth.Authenticate(
            auth_pb2.AuthenticateRequest(
                access_key=ADMIN["AUDITLINE_ADMIN_ACCESS_KEY"],
                secret_key="s" * (MAX_SECRET_KEY_CHARS + 1),
            ),
            timeout=30,
        )
    )
    assert error.code() == Code.INVALID_ARGUMENT
    assert _violations(error) == [
        ("secret_key", f"must be at most {MAX_SECRET_KEY_CHARS} characters")
    ]
    error = error_of(
        lambda: auth.ValidateToken(
            auth_pb2.ValidateTokenRequest(token="t" * (MAX_TOKEN_CHARS + 1)), timeout=30
        )
    )
    assert error.code() == Code.INVALID_ARGUMENT
    assert _violations(error) == [("token", f"must be at most {MAX_TOKEN_CHARS} characters")]
    anonymous.close()
    # Nothing was counted against the address: the admin logs in from it.
    login_as_admin(process.target, ADMIN).close()
    assert process.terminate() == 0
    assert _login_failure_keys(process.data_dir) == [longest]
    events = exported_events(process.data_dir)
    iam = [e for e in events if e["LogType"] == "LOG_TYPE_IAM"]
    assert {len(e["Request"]["AccessKey"]) for e in iam} <= {
        MAX_ACCESS_KEY_CHARS,
        len(ADMIN["AUDITLINE_ADMIN_ACCESS_KEY"]),
    }
    (unknown,) = [e for e in iam if e["EventName"] == "FailedLoginUnknownAccessKey"]
    assert unknown["Request"]["AccessKey"] == longest
    refused: list[dict[str, Any]] = [
        e
        for e in events
        if e["LogType"] == "LOG_TYPE_ACCOUNT_API"
        and e["Response"]["ResponseStatus"] == "INVALID_ARGUMENT"
    ]
    # Every refusal is audited, its parameters small: the 1 MB access key is
    # recorded as its HMAC.
    assert [e["Method"] for e in refused] == ["Authenticate"] * (attempts + 1) + ["ValidateToken"]
    assert all(len(str(e["Request"]["RequestParams"])) < 4096 for e in refused)


@pytest.mark.parametrize(
    ("variable", "limit"),
    [
        ("AUDITLINE_ADMIN_ACCESS_KEY", MAX_ACCESS_KEY_CHARS),
        ("AUDITLINE_ADMIN_SECRET_KEY", MAX_SECRET_KEY_CHARS),
    ],
)
def test_first_admin_keys_no_login_would_take_are_refused_at_start(
    tmp_path: Path, variable: str, limit: int
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        accounts = Accounts(database)
        with pytest.raises(ValueError, match=f"{variable} must be at most {limit} characters"):
            accounts.bootstrap_admin(tmp_path, {variable: "k" * (limit + 1)})
        # At the bound it is taken.
        accounts.bootstrap_admin(tmp_path, {variable: "k" * limit})
        with database.begin() as connection:
            assert connection.execute(sa.select(tables.service_accounts.c.id)).all() == [("admin",)]
    finally:
        database.close()
