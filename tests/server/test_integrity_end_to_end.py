"""The log proven end to end through `auditline serve`: the verifier keys through the
API, restarts, key rotation, an object-store outage and kill -9, tampering on
SeaweedFS, and an OCSF exporter of one log beside the default."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import duration_pb2

from auditline.account.v1 import bucket_pb2
from auditline.audit.v1 import audit_log_pb2, event_pb2, exporter_pb2
from auditline.interceptor.integrity import (
    Report,
    S3Location,
    SigningKey,
    Verifier,
    VerifierKey,
)
from tests.conftest import ServeFactory
from tests.support.clients import login_as_admin
from tests.support.integrity_checks import (
    ADMIN,
    finding_kinds,
    make_calls,
    manifests,
    objects_dir,
    verifier_keys,
    verify,
    wait_past,
)
from tests.support.processes import wait_for
from tests.support.seaweedfs import SeaweedFS
from tests.support.serve import ServeProcess


def test_verifier_keys_through_the_api(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    response = api.events.GetVerifierKeys(audit_log_pb2.GetVerifierKeysRequest())
    assert [VerifierKey.parse(k) for k in response.verifier_keys] == verifier_keys(process.data_dir)
    assert response.origin.startswith("auditline/")
    keys = objects_dir(process.data_dir) / "integrity" / "keys"
    published = wait_for(
        lambda: list(keys.glob("*.pub")) or None, timeout=30, what="the published key"
    )
    assert [p.read_text().strip() for p in published] == list(response.verifier_keys)


def test_proven_across_restarts_rotation_outage_and_kill_9(
    tmp_path: Path, audit_process: str
) -> None:
    data_dir = tmp_path / "data"
    args = ["--export-interval", "0.3", "--audit-durability", "sync"]
    args += ["--audit-process", audit_process]
    first = ServeProcess(data_dir, args=args, env=ADMIN).start()
    make_calls(first.target, 20)
    assert first.terminate() == 0
    # A new signing key (rotation): the old one stays listed and still verifies.
    rotated = tmp_path / "rotated.key"
    rotated.write_text(
        SigningKey.generate(f"auditline/{(data_dir / 'node-id').read_text().strip()}").text
    )
    second = ServeProcess(
        data_dir, args=[*args, "--audit-signing-key-file", str(rotated)], env=ADMIN
    ).start()
    make_calls(second.target, 20)
    os.kill(second.proc.pid, signal.SIGKILL)  # sync mode: every answered call is spooled
    second.proc.wait(10)
    third = ServeProcess(
        data_dir, args=[*args, "--audit-signing-key-file", str(rotated)], env=ADMIN
    ).start()
    make_calls(third.target, 10)
    assert third.terminate() == 0
    keys = verifier_keys(data_dir)
    assert len(keys) == 2
    report = verify(objects_dir(data_dir), keys)
    assert report.findings == []
    assert report.ok
    assert len(report.nodes[0].keys) == 2
    # With only the old key, the rotated part is not proven.
    assert "untrusted-checkpoint" in finding_kinds(verify(objects_dir(data_dir), keys[:1]))


@pytest.mark.seaweedfs
def test_tampering_on_seaweedfs_is_found(serve: ServeFactory, seaweedfs: SeaweedFS) -> None:
    bucket = f"proof-{uuid.uuid4().hex[:10]}"
    client = seaweedfs.client()
    client.create_bucket(Bucket=bucket)  # no object lock: the test tampers with it
    env = ADMIN | seaweedfs.aws_env
    target = f"s3://{bucket}?endpoint={seaweedfs.endpoint}&region=us-east-1"
    process = serve(
        "--export-target",
        target,
        "--export-retention-days",
        "0",
        "--export-interval",
        "0.3",
        env=env,
    )
    location = S3Location(bucket, "", client)

    def manifests() -> int:
        return sum(1 for key in location.list_keys() if "/manifests/" in key)

    for _ in range(3):
        before = manifests()
        make_calls(process.target, 20)
        wait_past(manifests, before)
    assert process.terminate() == 0
    keys = verifier_keys(process.data_dir)
    assert _verify_location(location, keys).ok
    data = sorted(
        key
        for key in location.list_keys()
        if not key.startswith("integrity/") and "account_api" in key
    )
    assert len(data) >= 3
    body = client.get_object(Bucket=bucket, Key=data[0])["Body"].read()
    lines = gzip.decompress(body).splitlines()
    client.put_object(
        Bucket=bucket, Key=data[0], Body=gzip.compress(b"\n".join(lines[:-1]) + b"\n")
    )
    client.delete_object(Bucket=bucket, Key=data[1])
    report = _verify_location(location, keys)
    assert {"modified-file", "missing-events", "deleted-file"} <= finding_kinds(report)
    assert not report.ok
    # The command line reads the bucket by URL, with the same credentials.
    key_file = process.data_dir.parent / "keys.pub"
    key_file.write_text("".join(k.text + "\n" for k in keys))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "auditline.client.cli",
            "verify",
            target,
            "--public-key",
            str(key_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "deleted-file" in result.stdout


def _verify_location(location: Any, keys: list[VerifierKey]) -> Report:
    return Verifier(location, keys).run()


def test_an_ocsf_exporter_of_one_log_beside_the_default_is_proven(serve: ServeFactory) -> None:
    """A second exporter writing only the IAM log, in OCSF: its bucket proves the whole
    tree (the other logs' leaves are in its manifests), and a changed record shows."""
    process = serve("--export-interval", "0.3", env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    bucket = f"iam-{uuid.uuid4().hex[:10]}"
    api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=bucket))
    api.exporters.CreateExporter(
        exporter_pb2.CreateExporterRequest(
            exporter_id="iam-only",
            exporter=exporter_pb2.Exporter(
                display_name="IAM to the SIEM",
                bucket=bucket,
                format=exporter_pb2.OUTPUT_FORMAT_OCSF_JSON,
                compression=exporter_pb2.COMPRESSION_ZSTD,
                flush_interval=duration_pb2.Duration(seconds=1),
                log_types=[event_pb2.LOG_TYPE_IAM],
            ),
        ),
    )
    make_calls(process.target, 10)
    assert process.terminate() == 0
    keys = verifier_keys(process.data_dir)
    root = process.data_dir / "objects" / bucket / "objects"
    files = sorted(p for p in root.rglob("*.jsonl.zst"))
    assert files
    assert all("/iam/" in p.as_posix() for p in files)
    report = verify(root, keys)
    assert report.findings == []
    assert report.ok
    written = [json.loads(p.read_text()) for p in manifests(root)]
    assert any(m["omitted"] for m in written)  # the account API events' leaves
    # One field of one OCSF record changed (the status, say): not the record its event makes.
    import zstandard

    path = files[0]
    lines = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes()).splitlines()
    record = json.loads(lines[0])
    record["status_id"] = 2 if record["status_id"] == 1 else 1
    changed = [json.dumps(record).encode(), *lines[1:]]
    path.write_bytes(zstandard.ZstdCompressor().compress(b"".join(x + b"\n" for x in changed)))
    report = verify(root, keys)
    assert {"modified-file", "unreadable-line", "missing-events"} <= finding_kinds(report)
