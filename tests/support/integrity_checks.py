"""Calls and checks shared by the tamper-evidence tests (tests/server/test_integrity*.py)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path

from auditline.account.v1 import bucket_pb2
from auditline.errors import NotFoundError
from auditline.interceptor.integrity import (
    LocalDirectory,
    Report,
    Verifier,
    VerifierKey,
)
from tests.support.clients import login_as_admin
from tests.support.exported import DEFAULT_BUCKET
from tests.support.processes import wait_for

ADMIN = {
    "AUDITLINE_ADMIN_ACCESS_KEY": "AKPROVE",
    "AUDITLINE_ADMIN_SECRET_KEY": "prove-" + uuid.uuid4().hex,
}


def make_calls(target: str, count: int) -> None:
    with login_as_admin(target, ADMIN) as api:
        for i in range(count):
            if i % 2:
                api.buckets.ListBuckets(bucket_pb2.ListBucketsRequest(page_size=1))
            else:
                with contextlib.suppress(NotFoundError):
                    api.buckets.GetBucket(bucket_pb2.GetBucketRequest(name="buckets/none"))


def verifier_keys(data_dir: Path) -> list[VerifierKey]:
    return [
        VerifierKey.parse(line) for line in (data_dir / "audit-verifier-keys").read_text().split()
    ]


def objects_dir(data_dir: Path) -> Path:
    return data_dir / "objects" / DEFAULT_BUCKET / "objects"


def wait_past(count: Callable[[], int], before: int) -> None:
    """Wait until the round's manifest is written (the count grows past `before`)."""

    def grown() -> bool | None:
        return True if count() > before else None

    wait_for(grown, timeout=30, what="the round's manifest")


def verify(root: Path, keys: list[VerifierKey]) -> Report:
    return Verifier(LocalDirectory(root), keys).run()


def finding_kinds(report: Report) -> set[str]:
    return {finding.kind for finding in report.findings}


def manifests(root: Path) -> list[Path]:
    return sorted(root.rglob("manifests/*.json"))
