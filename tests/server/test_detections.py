"""The shipped detection rules: valid against the Sigma specification's schemas and
pySigma (lint included), converted by pySigma's SQLite backend, and run over a real
server's OCSF export — scripted attacks find exactly their rules, a quiet run none."""

from __future__ import annotations

import datetime
import json
import sqlite3
import uuid
from typing import Any

import jsonschema
import pytest
import yaml
from sigma.backends.sqlite.sqlite import sqliteBackend
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.plugins import InstalledSigmaPlugins
from sigma.validation import SigmaValidator

from auditline.account.v1 import bucket_pb2, permission_pb2
from auditline.account.v1 import service_account_pb2 as sa_pb
from auditline.audit.v1 import exporter_pb2, settings_pb2
from auditline.client import Client
from auditline.errors import AuditlineError
from auditline.server.detection_rules import shipped_rules_text
from tests.conftest import ServeFactory
from tests.support.clients import login
from tests.support.exported import DEFAULT_BUCKET, exported_files, read_lines
from tests.support.paths import TEST_DATA

KEY, SECRET = "AKDETECT", "detect-" + uuid.uuid4().hex
ENV = {"AUDITLINE_ADMIN_ACCESS_KEY": KEY, "AUDITLINE_ADMIN_SECRET_KEY": SECRET}
ARGS = ("--export-format", "ocsf-json", "--audit-unauthenticated-burst", "100000")


def _rules() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(shipped_rules_text()))


def test_the_rules_follow_the_sigma_specification_and_lint_clean() -> None:
    schemas = {
        kind: jsonschema.Draft202012Validator(
            json.loads((TEST_DATA / "sigma" / f"sigma-{kind}-schema.json").read_text())
        )
        for kind in ("detection-rule", "correlation-rules")
    }
    rules = _rules()
    assert len(rules) >= 12
    for rule in rules:
        kind = "correlation-rules" if "correlation" in rule else "detection-rule"
        errors = [e.message for e in schemas[kind].iter_errors(rule)]
        assert not errors, (rule["title"], errors)
        assert any(t.startswith("attack.") for t in rule["tags"]), rule["title"]
    assert len({r["id"] for r in rules}) == len(rules)
    collection = SigmaCollection.from_yaml(shipped_rules_text())
    assert not collection.errors
    validators: dict[str, Any] = InstalledSigmaPlugins.autodiscover().validators
    lint = SigmaValidator(
        [v for name, v in validators.items() if name not in {"attacktag", "d3_fendtag"}]
    )
    plain: Any = iter([r for r in collection.rules if hasattr(r, "detection")])
    assert [str(issue) for issue in lint.validate_rules(plain)] == []


def _fields(rule: dict[str, Any]) -> set[str]:
    """The fields a rule's selections and correlation name."""
    named = {
        f.split("|")[0]
        for s in rule.get("detection", {}).values()
        if isinstance(s, dict)
        for f in s
    }
    correlation = rule.get("correlation", {})
    named |= set(correlation.get("group-by", []))
    if "field" in correlation.get("condition", {}):
        named.add(correlation["condition"]["field"])
    return named


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            flat[f"{prefix}{key}"] = json.dumps(value)
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _matches(records: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Each rule's title → the operations of the events it matched (its evidence)."""
    rows = [_flatten(r) for r in records]
    for row in rows:  # the backend's correlations read an ISO `timestamp`
        when = datetime.datetime.fromtimestamp(row["time"] / 1000, datetime.UTC)
        row["timestamp"] = when.strftime("%Y-%m-%d %H:%M:%S.%f")
    # Every field a rule names is a column, so that a rule whose field no event has
    # matches nothing rather than failing.
    named = {f for r in _rules() for f in _fields(r)}
    columns = sorted({c for row in rows for c in row} | named)
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE TABLE logs ({', '.join(f'`{c}` COLLATE NOCASE' for c in columns)})")
    for row in rows:
        keys = list(row)
        names = ", ".join(f"`{k}`" for k in keys)
        insert = f"INSERT INTO logs ({names}) VALUES ({', '.join('?' * len(keys))})"  # noqa: S608
        db.execute(insert, [row[k] for k in keys])
    collection = SigmaCollection.from_yaml(shipped_rules_text())
    backend = sqliteBackend(table="logs")  # type: ignore[no-untyped-call]
    found: dict[str, set[str]] = {}
    # Plain rules first: a correlation is converted from its base rules' conversion.
    ordered = sorted(collection.rules, key=lambda r: isinstance(r, SigmaCorrelationRule))
    for rule in ordered:
        if isinstance(rule, SigmaCorrelationRule):
            queries = backend.convert_correlation_rule(rule)  # type: ignore[no-untyped-call]
        else:
            # Empty for a correlation's base rule: it is reported through the correlation.
            queries = backend.convert_rule(rule)  # type: ignore[no-untyped-call]
        for query in queries:
            correlation = isinstance(rule, SigmaCorrelationRule)
            if not correlation:
                query = query.replace("SELECT * FROM logs", "SELECT rowid FROM logs", 1)
            results = db.execute(query).fetchall()
            for result in results:
                if correlation:  # the evidence: `<slot>:<rowid>` of each event
                    rowids = [int(i.rsplit(":", 1)[1]) for i in json.loads(result[8])]
                else:
                    rowids = [result[0]]
                for rowid in rowids:
                    found.setdefault(rule.title, set()).add(rows[rowid - 1]["api.operation"])
    return found


def _export(serve: ServeFactory, script: Any) -> list[dict[str, Any]]:
    process = serve(*ARGS, env=ENV)
    script(process.target)
    assert process.terminate() == 0
    return [
        record
        for path in exported_files(process.data_dir, DEFAULT_BUCKET)
        for record in read_lines(path.name, path.read_bytes())
    ]


def _attacks(target: str) -> None:
    admin = login(target, KEY, SECRET)
    # Brute force one account, then spray unknown keys from the same address.
    for _ in range(10):
        with (
            Client(target, access_key=KEY, secret_key="wrong") as wrong,
            pytest.raises(AuditlineError),
        ):
            wrong.token  # noqa: B018
    for n in range(10):
        with (
            Client(target, access_key=f"AKSPRAY{n}", secret_key="x") as spray,
            pytest.raises(AuditlineError),
        ):
            spray.token  # noqa: B018
    # Privilege: an admin account, a permission on every bucket.
    admin.accounts.CreateServiceAccount(
        sa_pb.CreateServiceAccountRequest(
            service_account=sa_pb.ServiceAccount(display_name="shadow", role=sa_pb.ROLE_ADMIN)
        )
    )
    admin.permissions.CreatePermission(
        permission_pb2.CreatePermissionRequest(
            permission=permission_pb2.Permission(
                display_name="everything",
                access=permission_pb2.ACCESS_READ_WRITE,
                bucket_scope=permission_pb2.BUCKET_SCOPE_ALL,
            )
        )
    )
    # Covering tracks: audit logs off (and on again), an exporter deleted, lock changed.
    admin.settings.DisableAccountAuditLogs(settings_pb2.DisableAccountAuditLogsRequest())
    admin.settings.EnableAccountAuditLogs(settings_pb2.EnableAccountAuditLogsRequest())
    admin.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id="loot"))
    exporter = admin.exporters.CreateExporter(
        exporter_pb2.CreateExporterRequest(
            exporter=exporter_pb2.Exporter(display_name="siem", bucket="loot")
        )
    ).exporter
    admin.exporters.DeleteExporter(exporter_pb2.DeleteExporterRequest(name=exporter.name))
    admin.buckets.SetObjectImmutability(
        bucket_pb2.SetObjectImmutabilityRequest(name="buckets/loot")
    )
    # A standard account probing what it may do.
    created = admin.accounts.CreateServiceAccount(
        sa_pb.CreateServiceAccountRequest(
            service_account=sa_pb.ServiceAccount(display_name="probe")
        )
    )
    probe = login(target, created.service_account.access_key, created.secret_key)
    for _ in range(20):
        with pytest.raises(AuditlineError):
            probe.accounts.ListServiceAccounts(sa_pb.ListServiceAccountsRequest())
    probe.close()
    admin.close()


def test_scripted_attacks_find_exactly_their_rules(serve: ServeFactory) -> None:
    found = _matches(_export(serve, _attacks))
    assert found == {
        "auditline brute force against one account": {"FailedLoginWrongSecret"},
        "auditline failed logins across many accounts": {
            "FailedLoginWrongSecret",
            "FailedLoginUnknownAccessKey",
        },
        "auditline address blocked after failed logins": {"IpBlocked"},
        "auditline admin account created or role raised to admin": {"CreateServiceAccount"},
        "auditline permission on all buckets": {"CreatePermission"},
        "auditline audit logging disabled or redirected": {"DisableAccountAuditLogs"},
        "auditline exporter deleted or changed": {"DeleteExporter"},
        "auditline object lock change attempted": {"SetObjectImmutability"},
        "auditline burst of refused calls from one account": {"ListServiceAccounts"},
    }


def _quiet(target: str) -> None:
    admin = login(target, KEY, SECRET)
    admin.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id="ordinary"))
    admin.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
    admin.accounts.ListServiceAccounts(sa_pb.ListServiceAccountsRequest())
    admin.settings.GetAuditSettings(settings_pb2.GetAuditSettingsRequest())
    admin.close()


def test_a_quiet_run_finds_nothing(serve: ServeFactory) -> None:
    assert _matches(_export(serve, _quiet)) == {}
