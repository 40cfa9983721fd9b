"""Each log in its documented structure, from a real run: the account API log as
`ApiEvent`, the IAM log as the IAM structure, the settings log as the console
structure — checked key by key against schemas written from the document."""

from __future__ import annotations

import json
import uuid
from functools import cache
from typing import Any

import jsonschema
import pytest

from auditline.account.v1 import bucket_pb2
from auditline.audit.v1 import settings_pb2
from auditline.client import Client
from auditline.errors import UnauthenticatedError
from auditline.server.iam import IAM_CODES
from tests.conftest import ServeFactory
from tests.support.clients import login
from tests.support.exported import exported_files, read_lines
from tests.support.paths import TEST_DATA

KEY, SECRET = "AKSHAPES", "shapes-" + uuid.uuid4().hex
ENV = {"AUDITLINE_ADMIN_ACCESS_KEY": KEY, "AUDITLINE_ADMIN_SECRET_KEY": SECRET}


@cache
def _schema(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((TEST_DATA / "shapes" / name).read_text()))


def test_each_log_is_written_in_its_documented_structure(serve: ServeFactory) -> None:
    process = serve(env=ENV)
    with (
        Client(process.target, access_key=KEY, secret_key="wrong") as wrong,
        pytest.raises(UnauthenticatedError),
    ):
        wrong.token  # noqa: B018 (a failed login: IAM fp)
    admin = login(process.target, KEY, SECRET)
    admin.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id="shapes-bucket"))
    admin.settings.EnableAccountAuditLogs(settings_pb2.EnableAccountAuditLogsRequest())
    admin.close()
    assert process.terminate() == 0

    records: dict[str, list[dict[str, Any]]] = {}
    for path in exported_files(process.data_dir):
        log = path.relative_to(process.data_dir).parts[4]  # objects/<bucket>/objects/apievent/<log>
        records.setdefault(log, []).extend(read_lines(path.name, path.read_bytes()))
    assert set(records) == {"account_api", "iam", "settings"}

    api = records["account_api"]
    assert all(set(r) == {"ApiEvent"} for r in api)
    assert "CreateBucket" in {r["ApiEvent"]["EventName"] for r in api}

    iam = records["iam"]
    for record in iam:
        errors = [e.message for e in _schema("iam_log.schema.json").iter_errors(record)]
        assert not errors, errors
    codes = [r["content"]["type"] for r in iam]
    assert "fp" in codes
    assert "s" in codes
    assert set(codes) <= set(IAM_CODES)
    success = next(r for r in iam if r["content"]["type"] == "s")
    assert success["content"]["user_name"] == "admin"
    assert success["content"]["client_id"] == KEY
    assert success["content"]["ip"] == "127.0.0.1"
    # The document's description of each code, from its IAM table.
    assert success["content"]["description"] == IAM_CODES["s"]
    failed = next(r for r in iam if r["content"]["type"] == "fp")
    assert failed["content"]["description"] == "Failed login (incorrect password)."
    assert SECRET not in json.dumps(iam)

    settings = records["settings"]
    for record in settings:
        errors = [e.message for e in _schema("console_log.schema.json").iter_errors(record)]
        assert not errors, errors
    enabled = next(
        r for r in settings if r["ConsoleEvent"]["Eventname"] == "enable-account-audit-logs"
    )
    assert enabled["ConsoleEvent"]["StatusCode"] == 0
    assert enabled["UserIdentity"]["UserName"] == "admin"
    assert enabled["UserIdentity"]["EventSource"] == (
        "/auditline.audit.v1.AuditSettingsService/EnableAccountAuditLogs"
    )
    assert json.loads(enabled["ConsoleEvent"]["EventResponse"])["Action"] == (
        "EnableAccountAuditLogs"
    )


def test_the_iam_schema_knows_every_code_the_service_writes() -> None:
    schema = json.loads((TEST_DATA / "shapes" / "iam_log.schema.json").read_text())
    assert set(schema["properties"]["content"]["properties"]["type"]["enum"]) == set(IAM_CODES)
