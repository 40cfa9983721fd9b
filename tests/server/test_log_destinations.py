"""A bucket's log stays proven through ordinary changes on the node: an exporter deleted
and made again on the same bucket and prefix, and the audit target moved away and
back. Each verified as tampered before (inconsistent checkpoints, missing events;
found by a review helper)."""

from __future__ import annotations

import uuid
from pathlib import Path

from google.protobuf import duration_pb2

from auditline.account.v1 import bucket_pb2
from auditline.audit.v1 import exporter_pb2, settings_pb2
from auditline.client import Client
from tests.conftest import ServeFactory
from tests.support.clients import login_as_admin
from tests.support.exported import DEFAULT_BUCKET, exported_files
from tests.support.integrity_checks import verifier_keys, verify
from tests.support.processes import wait_for

ADMIN = {
    "AUDITLINE_ADMIN_ACCESS_KEY": "AKDEST",
    "AUDITLINE_ADMIN_SECRET_KEY": "dest-" + uuid.uuid4().hex,
}


def _more_files(api: Client, data_dir: Path, bucket: str, than: int) -> int:
    """Calls until the bucket holds more event files than `than`; how many it holds."""

    def grown() -> int | None:
        api.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
        count = len(exported_files(data_dir, bucket))
        return count if count > than else None

    return wait_for(grown, timeout=30, what=f"a new file in {bucket}", interval=0.3)


def _exporter(api: Client, name: str, bucket: str) -> str:
    made = api.exporters.CreateExporter(
        exporter_pb2.CreateExporterRequest(
            exporter=exporter_pb2.Exporter(
                display_name=name,
                bucket=bucket,
                prefix="siem/",
                flush_interval=duration_pb2.Duration(nanos=200_000_000),
            )
        )
    )
    return made.exporter.name


def test_logs_stay_proven_through_exporters_made_again_and_targets_moved_back(
    serve: ServeFactory, audit_process: str
) -> None:
    process = serve(
        "--audit-process",
        audit_process,
        "--state-poll-interval",
        "0.3",
        "--export-interval",
        "0.2",
        env=ADMIN,
    )
    api = login_as_admin(process.target, ADMIN)
    data = process.data_dir
    siem, other = (f"{n}-{uuid.uuid4().hex[:8]}" for n in ("siem", "other"))
    for bucket in (siem, other):
        api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=bucket, immutable=True))
    # An exporter, deleted, and another made on its bucket and prefix.
    first = _exporter(api, "first", siem)
    files = _more_files(api, data, siem, 0)
    api.exporters.DeleteExporter(exporter_pb2.DeleteExporterRequest(name=first))
    _exporter(api, "second", siem)
    _more_files(api, data, siem, files)
    # The audit target moved to another bucket and back.
    default_files = _more_files(api, data, DEFAULT_BUCKET, 0)
    for target, there in ((other, 0), (DEFAULT_BUCKET, default_files)):
        api.settings.SetAuditTargetBucket(
            settings_pb2.SetAuditTargetBucketRequest(target_bucket=target)
        )
        _more_files(api, data, target, there)
    api.close()
    assert process.terminate() == 0
    keys = verifier_keys(data)
    for bucket in (siem, other, DEFAULT_BUCKET):
        report = verify(data / "objects" / bucket / "objects", keys)
        assert report.findings == [], bucket
        assert report.nodes, bucket
    (back,) = verify(data / "objects" / DEFAULT_BUCKET / "objects", keys).nodes
    assert back.not_here  # what went to the other bucket meanwhile, by the node's word
