"""The shipped detection rules: valid against the Sigma specification's schemas and
pySigma (lint included), converted by pySigma's SQLite backend, and run over a real
server's OCSF export — scripted attacks find exactly their rules, a quiet run none."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from sigma.collection import SigmaCollection
from sigma.plugins import InstalledSigmaPlugins
from sigma.validation import SigmaValidator

from auditline.account.v1 import bucket_pb2, permission_pb2
from auditline.account.v1 import service_account_pb2 as sa_pb
from auditline.audit.v1 import exporter_pb2, settings_pb2
from auditline.client import Client
from auditline.errors import AuditlineError
from auditline.interceptor._ocsf import class_schema
from auditline.server.detection import DetectionError, DetectionWindow, Detector, rules_text
from auditline.server.detection_rules import shipped_rules_text
from tests.conftest import ServeFactory
from tests.support.clients import login, wait_for_findings
from tests.support.exported import DEFAULT_BUCKET, exported_records
from tests.support.integrity_checks import objects_dir, verifier_keys, verify
from tests.support.paths import TEST_DATA
from tests.support.serve import ServeProcess

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


def _matches(records: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Each rule's title → the operations of the events it matched (its evidence),
    found by the product's own detector (over the API events: the node's own findings,
    made as it stopped, are left out)."""
    records = [r for r in records if r.get("class_uid") == 6003]
    operations = {r["metadata"]["uid"]: r["api"]["operation"] for r in records}
    found: dict[str, set[str]] = {}
    for detection in Detector(rules_text()).run(records):
        found.setdefault(detection.title, set()).update(
            operations[event_id] for event_id in detection.event_ids
        )
    return found


def _export(serve: ServeFactory, script: Any) -> list[dict[str, Any]]:
    process = serve(*ARGS, env=ENV)
    script(process.target)
    assert process.terminate() == 0
    return exported_records(process.data_dir)


def _brute_force(target: str) -> None:
    """Ten wrong secret keys for the admin's access key, from one address."""
    for _ in range(10):
        with (
            Client(target, access_key=KEY, secret_key="wrong") as wrong,
            pytest.raises(AuditlineError),
        ):
            wrong.token  # noqa: B018


def _make_an_admin(admin: Client) -> None:
    admin.accounts.CreateServiceAccount(
        sa_pb.CreateServiceAccountRequest(
            service_account=sa_pb.ServiceAccount(display_name="shadow", role=sa_pb.ROLE_ADMIN)
        )
    )


def _cover_tracks(admin: Client) -> None:
    """Audit logs off (and on again), an exporter made and deleted."""
    admin.settings.DisableAccountAuditLogs(settings_pb2.DisableAccountAuditLogsRequest())
    admin.settings.EnableAccountAuditLogs(settings_pb2.EnableAccountAuditLogsRequest())
    admin.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id="loot"))
    exporter = admin.exporters.CreateExporter(
        exporter_pb2.CreateExporterRequest(
            exporter=exporter_pb2.Exporter(display_name="siem", bucket="loot")
        )
    ).exporter
    admin.exporters.DeleteExporter(exporter_pb2.DeleteExporterRequest(name=exporter.name))


def _attacks(target: str) -> None:
    admin = login(target, KEY, SECRET)
    # Brute force one account, then spray unknown keys from the same address.
    _brute_force(target)
    for n in range(10):
        with (
            Client(target, access_key=f"AKSPRAY{n}", secret_key="x") as spray,
            pytest.raises(AuditlineError),
        ):
            spray.token  # noqa: B018
    # Privilege: an admin account, a permission on every bucket.
    _make_an_admin(admin)
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
    _cover_tracks(admin)
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


def test_the_cli_back_tests_exported_files_in_either_format(
    serve: ServeFactory, tmp_path: Path
) -> None:
    process = serve(env=ENV)  # apievent-json files: read back and made OCSF records
    _attacks(process.target)
    assert process.terminate() == 0
    exported = process.data_dir / "objects" / DEFAULT_BUCKET / "objects"
    own = tmp_path / "rules"
    own.mkdir()
    (own / "bucket_created.yml").write_text(
        "title: my bucket created\nid: 0c1e2d3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f\nstatus: test\n"
        "logsource: {product: auditline}\ndetection:\n  selection:\n"
        "    api.operation: CreateBucket\n  condition: selection\nlevel: low\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "auditline.client.cli",
            "detect",
            str(exported),
            "--rules",
            str(own),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    titles = {d["title"] for d in json.loads(result.stdout)}
    assert "auditline brute force against one account" in titles
    assert "my bucket created" in titles
    (own / "broken.yml").write_text("title: broken\nlogsource: {product: x}\ndetection: {}\n")
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "auditline.client.cli",
            "detect",
            str(exported),
            "--rules",
            str(own),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2
    assert "auditline detect: error:" in refused.stderr


def test_a_rule_that_does_not_compile_is_refused_at_once() -> None:
    with pytest.raises(DetectionError):
        Detector("title: x\nlogsource: {product: x}\ndetection: {}\n")


def _findings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("class_uid") == 2004]


def _node_attacks(target: str) -> None:
    """What the engine must see on the node: a brute force, an admin made, the audit
    logs turned off (and on again), an exporter deleted."""
    admin = login(target, KEY, SECRET)
    _brute_force(target)
    _make_an_admin(admin)
    _cover_tracks(admin)
    wait_for_findings(admin, 5)  # the engine runs every 0.2 s here
    admin.close()


def test_the_node_reports_findings_as_ocsf_detection_findings(serve: ServeFactory) -> None:
    process = serve(*ARGS, "--detection-interval", "0.2", env=ENV)
    _node_attacks(process.target)
    assert process.terminate() == 0
    records = exported_records(process.data_dir)
    findings = _findings(records)
    validator = jsonschema.Draft202012Validator(class_schema(2004, "1.8.0"))
    for finding in findings:
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(finding)]
        assert not errors, errors
        assert finding["metadata"]["log_name"] == "findings"
    titles = sorted(f["finding_info"]["title"] for f in findings)
    assert titles == [
        "auditline address blocked after failed logins",
        "auditline admin account created or role raised to admin",
        "auditline audit logging disabled or redirected",
        "auditline brute force against one account",
        "auditline exporter deleted or changed",
    ]
    # Each points at the events that made it, which the export holds.
    operations = {r["metadata"]["uid"]: r["api"]["operation"] for r in records if "api" in r}
    by_title = {f["finding_info"]["title"]: f for f in findings}
    evidence = by_title["auditline brute force against one account"]["finding_info"]
    related = [operations[e["uid"]] for e in evidence["related_events"]]
    assert related == ["FailedLoginWrongSecret"] * 10
    assert by_title["auditline admin account created or role raised to admin"]["severity"] == "High"
    # The findings are in the log's tree like every event: the export still verifies.
    report = verify(objects_dir(process.data_dir), verifier_keys(process.data_dir))
    assert report.ok, report.findings


def test_a_quiet_node_reports_nothing(serve: ServeFactory) -> None:
    process = serve(*ARGS, "--detection-interval", "0.2", env=ENV)
    _quiet(process.target)
    admin = login(process.target, KEY, SECRET)
    admin.close()
    assert process.terminate() == 0
    records = exported_records(process.data_dir)
    assert _findings(records) == []


def test_a_rule_directory_that_does_not_compile_stops_the_start(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.yml").write_text("title: broken\nlogsource: {product: x}\ndetection: {}\n")
    process = ServeProcess(tmp_path / "data", args=["--detection-rules", str(rules)], env=ENV)
    # With the reason, whichever process builds events (an audit worker said only
    # "DetectionError"; found by a helper).
    with pytest.raises(RuntimeError, match="DetectionError: the rules cannot be read: Sigma rule"):
        process.start()


def _record(uid: str, operation: str, time_ms: int) -> dict[str, Any]:
    return {
        "class_uid": 6003,
        "time": time_ms,
        "status_id": 1,
        "status_code": "OK",
        "metadata": {"uid": uid, "log_name": "account_api"},
        "api": {"operation": operation, "service": {"name": "auditline.account.v1.BucketService"}},
    }


def test_the_window_looks_at_new_rows_and_keeps_a_bounded_past() -> None:
    window = DetectionWindow(Detector(rules_text()))
    window.add([_record("a", "SetObjectImmutability", 1_000), _record("b", "ListBuckets", 2_000)])
    first = window.detect(since_rowid=0)
    assert [d.event_ids for d in first] == [("a",)]
    since = window.last_rowid
    window.add([_record("c", "SetObjectImmutability", 3_000)])
    # Only the new row is looked at by the plain rules: "a" is not reported again.
    assert [d.event_ids for d in window.detect(since_rowid=since)] == [("c",)]
    # A caller's own keys never become columns: the table keeps the rules' fields only.
    columns = window.db.execute("SELECT COUNT(*) FROM pragma_table_info('logs')").fetchone()
    odd = _record("d", "ListBuckets", 3_500)
    odd["api"]["request"] = {"data": {"labels": {f"k{n}": "v" for n in range(3000)}}}
    window.add([odd])
    assert window.db.execute("SELECT COUNT(*) FROM pragma_table_info('logs')").fetchone() == columns
    window.forget_before(0, keep_at_most=1)
    assert window.db.execute("SELECT `metadata.uid` FROM logs").fetchall() == [("d",)]
    window.forget_before(5_000, keep_at_most=10)
    assert window.db.execute("SELECT COUNT(*) FROM logs").fetchone() == (0,)
    window.close()


def _api_record(
    uid: str,
    operation: str,
    *,
    service: str,
    data: dict[str, Any] | None = None,
    status: str = "OK",
    detail: str = "",
    log_name: str = "account_api",
) -> dict[str, Any]:
    return {
        "class_uid": 6003,
        "time": 1_000,
        "status_id": 1 if status == "OK" else 2,
        "status_code": status,
        "status_detail": detail,
        "metadata": {"uid": uid, "log_name": log_name},
        "api": {"operation": operation, "service": {"name": service}, "request": {"data": data}},
    }


ACCOUNTS = "auditline.account.v1.ServiceAccountService"


def test_rules_see_changes_made_whatever_the_client_saw_and_batches() -> None:
    """A deadline that passed, or a cancel, as the handler answered OK left the change
    made: the rule for successful calls missed it; and a batch of permissions
    escaped the one for single ones (both found by a review helper)."""
    admin = {"service_account": {"role": "ROLE_ADMIN"}}
    records = [
        _api_record("made", "CreateServiceAccount", service=ACCOUNTS, data=admin),
        _api_record(
            "late",
            "UpdateServiceAccount",
            service=ACCOUNTS,
            data=admin,
            status="DEADLINE_EXCEEDED",
            detail="Deadline Exceeded; the handler had answered OK",
        ),
        _api_record(
            "refused",
            "CreateServiceAccount",
            service=ACCOUNTS,
            data=admin,
            status="CANCELLED",
            detail="Cancelled by the client; the handler had answered PERMISSION_DENIED: no",
        ),
        _api_record(
            "batch",
            "BatchCreatePermissions",
            service="auditline.account.v1.PermissionService",
            data={"requests": [{"permission": {"bucket_scope": "BUCKET_SCOPE_ALL"}}]},
        ),
    ]
    by_rule: dict[str, set[str]] = {}
    for detection in Detector(rules_text()).run(records):
        by_rule.setdefault(detection.title, set()).update(detection.event_ids)
    assert by_rule == {
        "auditline admin account created or role raised to admin": {"late", "made"},
        "auditline permission on all buckets": {"batch"},
    }


def test_a_callers_unknown_method_named_like_an_event_raises_no_finding() -> None:
    """An unknown method is recorded under the caller's own name for it: calls to
    `/evil.X/IpBlocked` and the like raised critical findings (found by a review
    helper). The rules now look at the service's own events only."""
    records = [
        _api_record(f"forged-{i}", name, service=service, status="UNIMPLEMENTED")
        for i, (service, name) in enumerate(
            [
                ("evil.X", "AuditEventsDropped"),
                ("auditline.audit.v1", "auditeventsdropped"),
                ("evil.X", "IpBlocked"),
                ("auditline.account.v1.AuthService", "IpBlocked"),
                ("evil.X", "FailedLoginDisabledAccount"),
                ("auditline.account.v1.bucketservice", "SetObjectImmutability"),
            ]
        )
    ]
    assert Detector(rules_text()).run(records) == []
    real = _api_record(
        "real", "IpBlocked", service="auditline.account.v1.AuthService", log_name="iam"
    )
    assert [d.event_ids for d in Detector(rules_text()).run([real])] == [("real",)]


def test_what_comes_before_a_stop_is_evaluated_then_or_at_the_next_start(
    serve: ServeFactory,
) -> None:
    """The engine polls once more as it stops, and keeps its place for the next start:
    an admin made in the seconds before a stop raised no finding, then or ever (found
    by a review helper). Here the engine never polls on its own (an hour apart)."""
    process = serve(*ARGS, "--detection-interval", "3600", env=ENV)
    admin = login(process.target, KEY, SECRET)
    _make_an_admin(admin)
    admin.close()
    assert process.terminate() == 0
    titles = [f["finding_info"]["title"] for f in _findings(exported_records(process.data_dir))]
    assert titles == ["auditline admin account created or role raised to admin"]
    kept = process.data_dir / "audit" / "detection.seq"
    assert int(kept.read_text()) > 0
    # Started again from an earlier place (a stop whose last poll did not run): the
    # events since are evaluated, those before are not again.
    kept.write_text("0")
    again = serve(*ARGS, "--detection-interval", "0.2", env=ENV, data_dir=process.data_dir)
    assert again.terminate() == 0
    titles = [f["finding_info"]["title"] for f in _findings(exported_records(process.data_dir))]
    assert titles.count("auditline admin account created or role raised to admin") == 2
