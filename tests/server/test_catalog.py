"""The event catalog: generated from the contract, valid Sigma, matching exported events."""

from __future__ import annotations

import collections
import contextlib
import json
import subprocess
import sys
import uuid
from typing import Any

import grpc
import jsonschema
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sigma.collection import SigmaCollection
from sigma.plugins import InstalledSigmaPlugins
from sigma.rule import SigmaRule
from sigma.validation import SigmaValidator

from auditline.account.v1 import bucket_pb2, service_account_pb2
from auditline.audit.v1 import audit_log_pb2, settings_pb2
from auditline.client import Client
from auditline.errors import NotFoundError, UnauthenticatedError
from auditline.server.catalog import (
    CATALOG_VERSION,
    CHANGELOG,
    catalog,
    catalog_digest,
    sigma_rules,
    sigma_text,
)
from auditline.server.detection import Detector
from auditline.server.iam import IAM_CODES, IAM_EVENTS, IamEvent
from auditline.server.services.audit_settings import SETTINGS_LOG_METHODS
from tests.conftest import ServeFactory
from tests.contract.test_contract import EXPECTED_METHODS
from tests.support.clients import login, login_as_admin, wait_for_findings
from tests.support.exported import DEFAULT_BUCKET, exported_records
from tests.support.paths import TEST_DATA

SCHEMA = TEST_DATA / "sigma" / "sigma-detection-rule-schema.json"
ADMIN = {"AUDITLINE_ADMIN_ACCESS_KEY": "AKCATALOG", "AUDITLINE_ADMIN_SECRET_KEY": "cat-" + "s" * 30}


def test_every_method_of_the_contract_has_one_rule() -> None:
    expected = {(s, m) for s, ms in EXPECTED_METHODS.items() for m in ms}
    method_entries = [e for e in catalog() if (e.service, e.method) in expected and not e.iam_codes]
    methods = [(e.service, e.method) for e in method_entries]
    assert sorted(methods) == sorted(expected)
    ids = [e.rule_id for e in catalog()]
    assert len(ids) == len(set(ids))
    for entry in catalog():
        assert uuid.UUID(entry.rule_id).version == 5
    # Descriptions come from the methods' comments in proto/.
    by_method = {e.method: e for e in method_entries}
    # The changes of the audit settings are filed in the settings log, and say so.
    assert by_method["DisableAccountAuditLogs"].log_type == "settings"
    assert by_method["GetAuditSettings"].log_type == "account_api"
    assert by_method["CreateBucket"].description.startswith("Create bucket")
    assert by_method["Authenticate"].description == "Authenticate and get a session token."


def test_every_iam_event_and_code_is_catalogued_with_the_documents_description() -> None:
    iam = [e for e in catalog() if e.log_type == "iam"]
    assert {e.event_name for e in iam} == set(IAM_EVENTS)
    assert {code for e in iam for code in e.iam_codes} == set(IAM_CODES)
    for entry in iam:
        for code in entry.iam_codes:
            assert f"{code}: {IAM_CODES[code]}" in entry.description
    logout = next(e for e in iam if e.event_name == "LogoutSuccess")
    assert logout.description == "slo: User successfully signed out."
    assert logout.method == "Logout"
    rules = {r["title"]: r for r in sigma_rules()}
    assert rules["auditline LoginSuccess"]["logsource"]["service"] == "iam"
    with pytest.raises(ValueError, match="not in IAM_EVENTS"):
        IamEvent(
            code="s",
            event_name="Unlisted",
            description="",
            access_key="",
            account_name="",
            source_ip="",
            status=0,
        )


def test_yaml_and_json_hold_the_same_valid_sigma_rules() -> None:
    from_yaml = list(yaml.safe_load_all(sigma_text("yaml")))
    from_json = json.loads(sigma_text("json"))
    assert from_yaml == from_json == sigma_rules()
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    for rule in from_json:
        errors = [e.message for e in validator.iter_errors(rule)]
        assert not errors, (rule["title"], errors)
    collection = SigmaCollection.from_yaml(sigma_text("yaml"))
    assert len(collection.rules) == len(catalog())
    assert not collection.errors
    for rule in collection.rules:
        assert isinstance(rule, SigmaRule)
        rule.detection.parsed_condition[0].parse()  # the condition parses
    # pySigma's own lint, without the two validators that download ATT&CK / D3FEND data.
    validators: dict[str, Any] = InstalledSigmaPlugins.autodiscover().validators
    lint = SigmaValidator(
        [v for name, v in validators.items() if name not in {"attacktag", "d3_fendtag"}]
    )
    rules: Any = iter(collection.rules)
    assert [str(issue) for issue in lint.validate_rules(rules)] == []


def _titles_by_event(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The catalog rules that match each record (by event id), through the product's
    own detector (pySigma's SQLite backend)."""
    titles: dict[str, list[str]] = collections.defaultdict(list)
    for detection in Detector(sigma_text("yaml")).run(records):
        for uid in detection.event_ids:
            titles[uid].append(detection.title)
    return titles


def test_each_rule_matches_the_exported_ocsf_events_of_its_method(serve: ServeFactory) -> None:
    process = serve("--export-format", "ocsf-json", env=ADMIN)
    with (
        Client(process.target, access_key="AKCATALOG", secret_key="wrong") as wrong,
        pytest.raises(UnauthenticatedError),
    ):
        wrong.token  # noqa: B018 (a failed login: an IAM event)
    api = login_as_admin(process.target, ADMIN)
    name = f"cat-{uuid.uuid4().hex[:10]}"
    api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=name))
    api.buckets.GetBucket(bucket_pb2.GetBucketRequest(name=f"buckets/{name}"))
    with contextlib.suppress(NotFoundError):
        api.buckets.GetBucket(bucket_pb2.GetBucketRequest(name="buckets/missing"))
    api.buckets.DeleteBucket(bucket_pb2.DeleteBucketRequest(name=f"buckets/{name}"))
    api.accounts.ListServiceAccounts(service_account_pb2.ListServiceAccountsRequest())
    assert process.terminate() == 0
    records = exported_records(process.data_dir)
    audited = [
        r
        for r in records
        if r["api"]["service"]["name"].startswith("auditline.")
        and r["metadata"]["log_name"] == "account_api"
    ]
    operations = {r["api"]["operation"] for r in audited}
    assert {
        "Authenticate",
        "CreateBucket",
        "GetBucket",
        "DeleteBucket",
        "ListServiceAccounts",
    } <= operations
    titles = _titles_by_event(records)
    for record in audited:
        assert titles[record["metadata"]["uid"]] == [f"auditline {record['api']['operation']}"]
    iam = [r for r in records if r["metadata"]["log_name"] == "iam"]
    assert {"LoginSuccess", "FailedLoginWrongSecret"} <= {r["api"]["operation"] for r in iam}
    for record in iam:
        assert titles[record["metadata"]["uid"]] == [f"auditline {record['api']['operation']}"]


def test_the_catalog_is_served_to_auditors(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    admin = login_as_admin(process.target, ADMIN)
    created = admin.accounts.CreateServiceAccount(
        service_account_pb2.CreateServiceAccountRequest(
            service_account=service_account_pb2.ServiceAccount(
                display_name="auditor", role=service_account_pb2.ROLE_AUDITOR
            )
        )
    )
    auditor = login(process.target, created.service_account.access_key, created.secret_key)
    response = auditor.events.GetEventCatalog(
        audit_log_pb2.GetEventCatalogRequest(format=audit_log_pb2.CATALOG_FORMAT_JSON),
        timeout=30,
    )
    assert len(response.entries) == len(catalog())
    assert response.version == CATALOG_VERSION
    assert json.loads(response.sigma_rules) == sigma_rules()
    with Client(process.target) as anonymous, pytest.raises(UnauthenticatedError):
        anonymous.events.GetEventCatalog(audit_log_pb2.GetEventCatalogRequest(), timeout=30)


def test_the_cli_prints_the_catalog() -> None:
    for form in ("yaml", "json"):
        result = subprocess.run(
            [sys.executable, "-m", "auditline.client.cli", "catalog", "--format", form],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert result.stdout == sigma_text(form)


def test_every_event_of_a_mixed_run_matches_exactly_one_rule(serve: ServeFactory) -> None:
    process = serve(
        "--export-format",
        "ocsf-json",
        "--audit-unauthenticated-rate",
        "1",
        "--audit-unauthenticated-burst",
        "1",
        "--detection-interval",
        "0.2",
        env=ADMIN,
    )
    with (
        Client(process.target, access_key="AKCATALOG", secret_key="wrong") as wrong,
        pytest.raises(UnauthenticatedError),
    ):
        wrong.token  # noqa: B018 (IAM: fp)
    with Client(process.target) as anonymous:  # past the rate: counted in a summary
        for _ in range(4):
            with contextlib.suppress(UnauthenticatedError):
                anonymous.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
    with grpc.insecure_channel(process.target) as channel:  # health: the policy's summary
        health: Any = health_pb2_grpc.HealthStub(channel)
        for _ in range(3):
            health.Check(health_pb2.HealthCheckRequest(), timeout=30)
    api = login_as_admin(process.target, ADMIN)
    api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id="mixed", immutable=True))
    api.settings.EnableBucketAuditLogging(
        settings_pb2.EnableBucketAuditLoggingRequest(bucket="mixed")
    )
    api.settings.DisableBucketAuditLogging(
        settings_pb2.DisableBucketAuditLoggingRequest(bucket="mixed")
    )
    api.settings.SetAuditTargetBucket(
        settings_pb2.SetAuditTargetBucketRequest(target_bucket="mixed")
    )
    api.settings.DisableAccountAuditLogs(settings_pb2.DisableAccountAuditLogsRequest())
    api.settings.EnableAccountAuditLogs(settings_pb2.EnableAccountAuditLogsRequest())
    api.settings.GetAuditSettings(settings_pb2.GetAuditSettingsRequest())

    wait_for_findings(api)  # the audit logs were turned off: a detection finding
    api.close()
    assert process.terminate() == 0
    records = [
        r
        for bucket in (DEFAULT_BUCKET, "mixed")
        for r in exported_records(process.data_dir, bucket)
    ]
    logs = {r["metadata"]["log_name"] for r in records}
    assert logs == {"account_api", "iam", "settings", "summaries", "findings"}
    # The catalog's rules, through pySigma's SQLite backend: each event, exactly one.
    titles = _titles_by_event(records)
    unmatched = [r["metadata"]["uid"] for r in records if len(titles[r["metadata"]["uid"]]) != 1]
    assert unmatched == []
    by_operation = {r["api"]["operation"]: r["metadata"]["log_name"] for r in records if "api" in r}
    for method in SETTINGS_LOG_METHODS:
        assert by_operation[method] == "settings", method
    assert by_operation["GetAuditSettings"] == "account_api"


def test_a_changed_catalog_needs_a_changelog_line() -> None:
    """The newest changelog line pins the catalog's digest: a catalog that changed
    without a new version and line fails here (add one with the digest shown)."""
    version, digest, line = CHANGELOG[-1]
    assert digest == catalog_digest(), f"add a CHANGELOG line with digest {catalog_digest()}"
    assert version == CATALOG_VERSION
    assert line
    assert sigma_text("yaml").startswith(f"# auditline event catalog {CATALOG_VERSION}:")
