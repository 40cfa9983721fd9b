"""`auditline serve`'s audit policy: health checks and reflection are summarized by
default, every other call is recorded, and `--audit-policy` changes what is."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auditline.account.v1 import bucket_pb2
from auditline.audit.v1 import settings_pb2
from auditline.errors import InvalidArgumentError
from tests.conftest import ServeFactory
from tests.support.cli import run_auditline
from tests.support.clients import login
from tests.support.exported import exported_events
from tests.support.serve import ServeProcess

KEY, SECRET = "AKPOLICY", "policy-" + uuid.uuid4().hex
ENV = {"AUDITLINE_ADMIN_ACCESS_KEY": KEY, "AUDITLINE_ADMIN_SECRET_KEY": SECRET}
CHECK = "/grpc.health.v1.Health/Check"


def _probe(process: ServeProcess, times: int) -> None:
    with grpc.insecure_channel(process.target) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # its stubs omit the methods
        for _ in range(times):
            health.Check(health_pb2.HealthCheckRequest(), timeout=30)


def _run(
    serve: ServeFactory, *args: str, calls: Callable[[ServeProcess], None]
) -> list[dict[str, Any]]:
    process = serve(*args, env=ENV)
    calls(process)
    assert process.terminate() == 0
    return exported_events(process.data_dir)


def _calls(process: ServeProcess) -> None:
    _probe(process, 7)
    admin = login(process.target, KEY, SECRET)
    admin.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id="policy-ok"))
    with contextlib.suppress(InvalidArgumentError):
        admin.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id="Bad_Name"))
    admin.close()


def test_health_checks_are_counted_not_recorded_by_default(serve: ServeFactory) -> None:
    events = _run(serve, calls=_calls)
    assert not [e for e in events if e["Method"] == "Check"]
    summaries = [
        e["Request"]["RequestParams"] for e in events if e["EventName"] == "CallsSummarized"
    ]
    assert sum(s["methods"].get(CHECK, 0) for s in summaries) == 7
    assert {s["reason"] for s in summaries} == {"left out by the audit policy"}
    # In their own log: routine probes do not crowd the account API log.
    logs = {e["LogType"] for e in events if e["EventName"] == "CallsSummarized"}
    assert logs == {"LOG_TYPE_SUMMARIES"}
    created = [e for e in events if e["EventName"] == "CreateBucket"]
    assert [e["Response"]["ResponseStatus"] for e in created] == ["OK", "INVALID_ARGUMENT"]


def test_the_flag_chooses_what_is_recorded(serve: ServeFactory) -> None:
    events = _run(
        serve,
        "--audit-policy",
        "auditline.account.v1.BucketService/*=denied,*=all",
        calls=_calls,
    )
    assert len([e for e in events if e["Method"] == "Check"]) == 7  # no rule for health now
    created = [e for e in events if e["EventName"] == "CreateBucket"]
    assert [e["Response"]["ResponseStatus"] for e in created] == ["INVALID_ARGUMENT"]
    summaries = [
        e["Request"]["RequestParams"] for e in events if e["EventName"] == "CallsSummarized"
    ]
    methods = {m: n for s in summaries for m, n in s["methods"].items()}
    assert methods == {"/auditline.account.v1.BucketService/CreateBucket": 1}


def test_the_policy_is_shown_and_each_start_records_it(serve: ServeFactory, tmp_path: Path) -> None:
    rules = "auditline.account.v1.UsageService/*=denied,grpc.health.v1.Health/*=summary"
    process = serve("--audit-policy", rules, env=ENV)
    admin = login(process.target, KEY, SECRET)
    settings = admin.settings.GetAuditSettings(settings_pb2.GetAuditSettingsRequest()).settings
    assert list(settings.audit_policy) == rules.split(",")
    admin.close()
    env = {
        **os.environ,
        "AUDITLINE_TARGET": process.target,
        "AUDITLINE_CONFIG_DIR": str(tmp_path / "config"),
        "AUDITLINE_SECRET_KEY": SECRET,
    }
    run_auditline(env, "login", "--access-key", KEY)
    shown = run_auditline(env, "audit", "policy").stdout
    assert shown.splitlines() == [
        "PATTERN  RECORD",
        "auditline.account.v1.UsageService/*  denied",
        "grpc.health.v1.Health/*  summary",
        "(no match)  all",
    ]
    assert process.terminate() == 0
    applied = [
        e for e in exported_events(process.data_dir) if e["EventName"] == "AuditPolicyApplied"
    ]
    assert len(applied) == 1
    assert applied[0]["LogType"] == "LOG_TYPE_SETTINGS"
    assert applied[0]["Request"]["RequestParams"] == {"rules": rules.split(",")}


def test_reflection_streams_are_counted_not_recorded_by_default(
    serve: ServeFactory, grpcurl: Callable[..., str]
) -> None:
    process = serve(env=ENV)
    listed = grpcurl(process.target, "list")
    assert "auditline.account.v1.BucketService" in listed
    grpcurl(process.target, "describe", "auditline.account.v1.AuthenticateRequest")
    assert process.terminate() == 0
    events = exported_events(process.data_dir)
    assert not [e for e in events if e["Method"] == "ServerReflectionInfo"]
    counted = [
        n
        for e in events
        if e["EventName"] == "CallsSummarized"
        for m, n in e["Request"]["RequestParams"]["methods"].items()
        if m.endswith("/ServerReflectionInfo")
    ]
    assert sum(counted) >= 2
