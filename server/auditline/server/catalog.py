"""The event catalog: every audited method, generated from the contract, and every IAM
event (from `iam.IAM_EVENTS`), as Sigma rules.

Never a hand-kept list: the services, methods, event names and activities come
from the descriptors and their `(auditline.audit.v1.event)` options, and the
descriptions from the methods' comments in `proto/` (kept by `tools/generate.py`
in `contract.binpb`). Each event is one Sigma rule selecting it on the OCSF API
Activity fields the `ocsf-json` exporter writes (`class_uid`, `activity_id`,
`api.operation`, `api.service.name`).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import uuid
from functools import cache
from importlib import resources
from typing import Any

import yaml
from google.protobuf import descriptor_pb2

from auditline.audit.v1 import (
    audit_log_pb2,
    event_pb2,
    options_pb2,
)
from auditline.contract import SERVICES
from auditline.interceptor import DROP_EVENT, SUMMARY_EVENT, method_info
from auditline.server.bucket_reconciliation import BUCKETS_RECONCILED_EVENT
from auditline.server.detection_rules import FINDING_EVENT
from auditline.server.iam import IAM_CODES, IAM_EVENTS
from auditline.server.services.audit_settings import POLICY_EVENT, SETTINGS_LOG_METHODS

__all__ = [
    "CATALOG_VERSION",
    "CHANGELOG",
    "CatalogEntry",
    "catalog",
    "catalog_digest",
    "sigma_rules",
    "sigma_text",
]

# What changed in the catalog, newest last: (version, the catalog's digest then, the
# change). The catalog itself is generated; this line is written by hand when it
# changes, and a test fails until it is (the newest digest must be the catalog's).
CHANGELOG: tuple[tuple[str, str, str], ...] = (
    (
        "1.0.0",
        "",
        "Every audited method of the contract, with a Sigma rule each.",
    ),
    (
        "1.1.0",
        "4075d77498583978",
        "IAM events with their codes; the drop marker, both summaries and the audit "
        "policy event; settings changes filed in the settings log.",
    ),
    (
        "1.2.0",
        "712df692ae83a6f3",
        "DetectionFinding, the findings log's event (an OCSF Detection Finding).",
    ),
    (
        "1.3.0",
        "45fb2a6a912ade50",
        "QueryEvents, SQL over an exporter's files.",
    ),
    (
        "1.4.0",
        "bb5852230637af05",
        "BucketsReconciled, the buckets a start adopted from the object store or forgot.",
    ),
)
CATALOG_VERSION = CHANGELOG[-1][0]

# Fixed, so rule ids stay the same from release to release.
_AUTH_SERVICE = "auditline.account.v1.AuthService"
_LOG_TYPES = {
    "account_api": event_pb2.LOG_TYPE_ACCOUNT_API,
    "iam": event_pb2.LOG_TYPE_IAM,
    "settings": event_pb2.LOG_TYPE_SETTINGS,
    "summaries": event_pb2.LOG_TYPE_SUMMARIES,
    "findings": event_pb2.LOG_TYPE_FINDINGS,
}
_RULE_NAMESPACE = uuid.UUID("5d7c3c52-9a3e-4d55-8d1b-6a3c0b1c1e01")
_ACTIVITY_WORDS = {1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}
_LEVELS = {1: "low", 2: "informational", 3: "low", 4: "medium", 99: "informational"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class CatalogEntry:
    event_name: str
    service: str
    method: str
    activity: int
    description: str
    rule_id: str
    log_type: str = "account_api"
    iam_codes: tuple[str, ...] = ()


@cache
def _comments() -> dict[str, str]:
    """Leading comments of every method, by `package.Service.Method`."""
    data = (resources.files("auditline.audit.v1") / "contract.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    found: dict[str, str] = {}
    for file in files.file:
        for location in file.source_code_info.location:
            path = list(location.path)
            # 6 = service, 2 = method (FileDescriptorProto / ServiceDescriptorProto fields)
            if len(path) == 4 and path[0] == 6 and path[2] == 2:
                service = file.service[path[1]]
                method = service.method[path[3]]
                text = " ".join(location.leading_comments.split())
                found[f"{file.package}.{service.name}.{method.name}"] = text
    return found


@cache
def catalog() -> tuple[CatalogEntry, ...]:
    """Every audited method of the service, ordered by service and method; then every
    IAM event, with its codes and the account audit log document's description of each."""
    services = sorted(SERVICES, key=lambda service: service.full_name)
    entries = []
    for service in services:
        for method in service.methods:
            info = method_info(f"/{service.full_name}/{method.name}")
            options = method.GetOptions().Extensions[options_pb2.event]
            description = (
                options.description
                or _comments().get(method.full_name, "")
                or (f"{method.name} on {service.full_name}")
            )
            settings = (
                method.name in SETTINGS_LOG_METHODS and service.name == "AuditSettingsService"
            )
            entries.append(
                CatalogEntry(
                    event_name=info.event_name,
                    service=service.full_name,
                    method=method.name,
                    activity=info.activity,
                    description=description,
                    rule_id=str(uuid.uuid5(_RULE_NAMESPACE, info.event_name)),
                    log_type="settings" if settings else "account_api",
                )
            )
    for name, kind in IAM_EVENTS.items():
        entries.append(
            CatalogEntry(
                event_name=name,
                service=_AUTH_SERVICE,
                method=kind.method,
                activity=options_pb2.ACTIVITY_OTHER,
                description=" ".join(f"{code}: {IAM_CODES[code]}" for code in kind.codes),
                rule_id=str(uuid.uuid5(_RULE_NAMESPACE, f"iam/{name}")),
                log_type="iam",
                iam_codes=kind.codes,
            )
        )
    entries.extend(_PRODUCT_EVENTS)
    return tuple(entries)


# The events the product writes of itself, not for a call: each with the log it
# lands in (a rule per log where one name lands in two).
_PRODUCT_EVENTS = tuple(
    CatalogEntry(
        event_name=name,
        service=service,
        method=name,
        activity=options_pb2.ACTIVITY_OTHER
        if name not in (POLICY_EVENT, BUCKETS_RECONCILED_EVENT)
        else options_pb2.ACTIVITY_UPDATE,
        description=description,
        rule_id=str(uuid.uuid5(_RULE_NAMESPACE, f"{log}/{name}")),
        log_type=log,
    )
    for name, service, log, description in (
        (
            DROP_EVENT,
            "auditline.audit.v1",
            "settings",
            "Events the audit path could not keep: how many, why, between which times.",
        ),
        (
            SUMMARY_EVENT,
            "auditline.audit.v1",
            "account_api",
            "Unauthenticated calls past their source's rate, counted per source and interval.",
        ),
        (
            SUMMARY_EVENT,
            "auditline.audit.v1",
            "summaries",
            "Calls the audit policy records only in summaries, per source and interval.",
        ),
        (
            POLICY_EVENT,
            "auditline.audit.v1.AuditSettingsService",
            "settings",
            "The audit policy a start of the server applies.",
        ),
        (
            BUCKETS_RECONCILED_EVENT,
            "auditline.account.v1.BucketService",
            "account_api",
            "Buckets a start of the server adopted from the object store into the catalogue "
            "or forgot because the store no longer has them (--bucket-mismatch=adopt).",
        ),
        (
            FINDING_EVENT,
            "auditline.detections",
            "findings",
            "What a detection rule found: the rule and the events that make it "
            "(an OCSF Detection Finding).",
        ),
    )
)


def catalog_digest() -> str:
    """A short digest of the catalog's content (what `CHANGELOG` pins)."""
    entries = [dataclasses.asdict(entry) for entry in catalog()]
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]


def _rule(entry: CatalogEntry, *, shared: bool) -> dict[str, Any]:
    """The entry's rule; `shared`: its name is in two logs (CallsSummarized), so the
    rule says which log it selects."""
    short_service = entry.service.rpartition(".")[2]
    selection: dict[str, Any] = {
        "class_uid": 6003,
        "activity_id": entry.activity,
        "api.operation": entry.event_name,
        "api.service.name": entry.service,
    }
    if shared:
        selection["metadata.log_name"] = entry.log_type
    if entry.event_name == FINDING_EVENT:  # its OCSF record is a Detection Finding
        selection = {"class_uid": 2004, "metadata.log_name": "findings"}
    return {
        "title": f"auditline {entry.event_name}" + (f" ({entry.log_type})" if shared else ""),
        "id": entry.rule_id,
        "status": "stable",
        "description": f"{entry.description} ({short_service}, OCSF API Activity: "
        f"{_ACTIVITY_WORDS.get(entry.activity, 'Other')}).",
        "author": "auditline",
        "logsource": {"product": "auditline", "service": entry.log_type},
        "detection": {
            "selection": selection,
            "condition": "selection",
        },
        "fields": (
            ["finding_info.title", "finding_info.analytic.uid", "severity"]
            if entry.event_name == FINDING_EVENT
            else ["actor.user.name", "actor.user.uid", "src_endpoint.ip", "status_code"]
        ),
        "falsepositives": ["Every call of this method matches: the rule names the event"],
        "level": _LEVELS.get(entry.activity, "informational"),
        # pySigma's lint accepts only the spec's tag namespaces; this is what the rules
        # are for: hunting through the audit log by event.
        "tags": ["detection.threat-hunting"],
    }


def sigma_rules() -> list[dict[str, Any]]:
    """One Sigma rule per catalogued event."""
    names = collections.Counter(entry.event_name for entry in catalog())
    return [_rule(entry, shared=names[entry.event_name] > 1) for entry in catalog()]


@cache
def sigma_text(form: str = "yaml") -> str:
    """The rules as YAML (one document per rule) or as a JSON array."""
    rules = sigma_rules()
    if form == "json":
        return json.dumps(rules, indent=2) + "\n"
    if form != "yaml":
        raise ValueError("the catalog comes as yaml or json")
    header = f"# auditline event catalog {CATALOG_VERSION}: {CHANGELOG[-1][2]}\n"
    return header + yaml.safe_dump_all(rules, sort_keys=False, explicit_start=True)


def catalog_response(form: int) -> audit_log_pb2.GetEventCatalogResponse:
    """The `GetEventCatalog` answer for a `CatalogFormat`."""
    text = sigma_text("json" if form == audit_log_pb2.CATALOG_FORMAT_JSON else "yaml")
    return audit_log_pb2.GetEventCatalogResponse(
        entries=[
            audit_log_pb2.CatalogEntry(
                event_name=e.event_name,
                service=e.service,
                method=e.method,
                activity=options_pb2.Activity.ValueType(e.activity),
                description=e.description,
                rule_id=e.rule_id,
                log_type=_LOG_TYPES[e.log_type],
                iam_codes=e.iam_codes,
            )
            for e in catalog()
        ],
        sigma_rules=text,
        version=CATALOG_VERSION,
    )
