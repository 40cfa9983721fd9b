"""Proving the log: `auditline verify` on an untouched export, and on each kind of
tampering (on a copy of the filesystem store's bucket, and on SeaweedFS); proofs of
single events; key rotation, restarts, outages and `kill -9`."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import duration_pb2

from auditline.account.v1 import bucket_pb2
from auditline.audit.v1 import audit_log_pb2, event_pb2, exporter_pb2
from auditline.errors import NotFoundError
from auditline.interceptor.integrity import (
    LocalDirectory,
    Report,
    S3Location,
    SigningKey,
    Verifier,
    VerifierKey,
    prove,
    verify_proof,
)
from tests.conftest import ServeFactory
from tests.support.clients import login_as_admin
from tests.support.exported import DEFAULT_BUCKET
from tests.support.processes import wait_for
from tests.support.seaweedfs import SeaweedFS
from tests.support.serve import ServeProcess

ADMIN = {
    "AUDITLINE_ADMIN_ACCESS_KEY": "AKPROVE",
    "AUDITLINE_ADMIN_SECRET_KEY": "prove-" + uuid.uuid4().hex,
}


def _calls(target: str, count: int) -> None:
    with login_as_admin(target, ADMIN) as api:
        for i in range(count):
            if i % 2:
                api.buckets.ListBuckets(bucket_pb2.ListBucketsRequest(page_size=1))
            else:
                with contextlib.suppress(NotFoundError):
                    api.buckets.GetBucket(bucket_pb2.GetBucketRequest(name="buckets/none"))


def _keys(data_dir: Path) -> list[VerifierKey]:
    return [
        VerifierKey.parse(line) for line in (data_dir / "audit-verifier-keys").read_text().split()
    ]


def _objects(data_dir: Path) -> Path:
    return data_dir / "objects" / DEFAULT_BUCKET / "objects"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[VerifierKey]]:
    """A server's exported log in several batches and both formats' worth of files."""
    data_dir = tmp_path_factory.mktemp("proven") / "data"
    args = ["--export-interval", "0.3", "--usage-snapshot-interval", "0"]
    process = ServeProcess(data_dir, args=args, env=ADMIN).start()
    try:
        for _ in range(4):
            before = len(_manifests(_objects(data_dir)))
            _calls(process.target, 30)
            # Each round of calls is exported (a batch, a manifest) before the next.
            _wait_past(lambda: len(_manifests(_objects(data_dir))), before)
        assert process.terminate() == 0
    finally:
        process.stop()
    return _objects(data_dir), _keys(data_dir)


def _wait_past(count: Callable[[], int], before: int) -> None:
    """Wait until the round's manifest is written (the count grows past `before`)."""

    def grown() -> bool | None:
        return True if count() > before else None

    wait_for(grown, timeout=30, what="the round's manifest")


def _copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(source, target)
    return target


def _verify(root: Path, keys: list[VerifierKey]) -> Report:
    return Verifier(LocalDirectory(root), keys).run()


def _kinds(report: Report) -> set[str]:
    return {finding.kind for finding in report.findings}


def _data_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.jsonl.gz") if "integrity" not in p.parts)


def _manifests(root: Path) -> list[Path]:
    return sorted(root.rglob("manifests/*.json"))


def _rewrite(path: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    lines = gzip.decompress(path.read_bytes()).splitlines()
    path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in change(lines))))


def _largest(root: Path) -> Path:
    return max(_data_files(root), key=lambda p: len(gzip.decompress(p.read_bytes()).splitlines()))


def test_an_untouched_log_is_proven(exported: tuple[Path, list[VerifierKey]]) -> None:
    root, keys = exported
    report = _verify(root, keys)
    assert report.findings == []
    assert report.ok
    (node,) = report.nodes
    assert node.first_seq == 1
    assert node.events == node.last_seq == node.tree_size
    assert node.checkpoints >= 4  # several batches, each with its checkpoint


def _edit_field(lines: list[bytes]) -> list[bytes]:
    record = json.loads(lines[1])
    record["ApiEvent"]["Response"]["ResponseStatus"] = "OK"
    record["ApiEvent"]["Response"]["ResponseCode"] = 0
    record["ApiEvent"]["Request"]["SourceIP"] = "10.9.9.9"
    return [lines[0], json.dumps(record).encode(), *lines[2:]]


def _insert(lines: list[bytes]) -> list[bytes]:
    record = json.loads(lines[0])
    record["ApiEvent"]["EventId"] = str(uuid.uuid4())
    record["ApiEvent"]["Sequence"] = "999999"
    return [*lines, json.dumps(record).encode()]


MUTATIONS: dict[str, tuple[Callable[[Path], None], set[str]]] = {
    "modified event": (
        lambda root: _rewrite(_largest(root), _edit_field),
        {"modified-file", "changed-events"},
    ),
    "deleted file": (lambda root: _largest(root).unlink(), {"deleted-file"}),
    "missing event": (
        lambda root: _rewrite(_largest(root), lambda lines: lines[:1] + lines[2:]),
        {"modified-file", "missing-events"},
    ),
    "inserted event": (lambda root: _rewrite(_largest(root), _insert), {"inserted-event"}),
    "reordered events": (
        lambda root: _rewrite(_largest(root), lambda lines: [lines[1], lines[0], *lines[2:]]),
        {"modified-file", "reordered-events"},
    ),
    "duplicated event": (
        lambda root: _rewrite(_largest(root), lambda lines: [*lines, lines[0]]),
        {"modified-file", "duplicated-event"},
    ),
    "truncated tail": (lambda root: _truncate(root), {"truncated-tail"}),
    "forged checkpoint": (lambda root: _forge(root), {"forged-checkpoint"}),
    "checkpoints that do not extend each other": (
        lambda root: _rewind(root),
        {"inconsistent-checkpoints"},
    ),
    "an unlisted file": (lambda root: _unlisted(root), {"uncovered-file"}),
}


def _batch_manifests(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    found = [(p, json.loads(p.read_text())) for p in _manifests(root)]
    return sorted(((p, m) for p, m in found if m["files"]), key=lambda item: item[1]["first_seq"])


def _truncate(root: Path) -> None:
    """Cut the log's tail: the last batch's files and manifest go."""
    path, manifest = _batch_manifests(root)[-1]
    for entry in manifest["files"]:
        (root / entry["key"]).unlink()
    path.unlink()


def _forge(root: Path) -> None:
    path, manifest = _batch_manifests(root)[1]
    origin, size, _root, rest = manifest["checkpoint"].split("\n", 3)
    manifest["checkpoint"] = "\n".join([origin, size, "A" * 43 + "=", rest])
    path.write_text(json.dumps(manifest))


def _rewind(root: Path) -> None:
    """A manifest whose tree before it is not the one the checkpoint before signed."""
    path, manifest = _batch_manifests(root)[2]
    hashes = manifest["frontier"]["hashes"]
    hashes[0] = hashes[0][::-1] if hashes[0] != hashes[0][::-1] else "B" * 43 + "="
    path.write_text(json.dumps(manifest))


def _unlisted(root: Path) -> None:
    source = _data_files(root)[0]
    shutil.copy(source, source.with_name("f00d-000000000001-000000000002.jsonl.gz"))


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_each_kind_of_tampering_is_found_and_named(
    exported: tuple[Path, list[VerifierKey]], tmp_path: Path, mutation: str
) -> None:
    source, keys = exported
    root = _copy(source, tmp_path)
    mutate, expected = MUTATIONS[mutation]
    mutate(root)
    report = _verify(root, keys)
    assert not report.ok
    assert expected <= _kinds(report), report.findings
    named = [f for f in report.findings if f.kind in expected]
    assert all(f.node and (f.key or f.first_seq) for f in named if f.kind != "uncovered-file")


def test_a_checkpoint_by_an_untrusted_key(exported: tuple[Path, list[VerifierKey]]) -> None:
    root, _ = exported
    report = _verify(root, [SigningKey.generate("someone/else").verifier])
    assert "untrusted-checkpoint" in _kinds(report)
    assert not report.ok


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditline.client.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_command_line_exit_codes_and_json(
    exported: tuple[Path, list[VerifierKey]], tmp_path: Path
) -> None:
    root, keys = exported
    key_file = tmp_path / "keys.pub"
    key_file.write_text("".join(k.text + "\n" for k in keys))
    good = _cli("verify", str(root), "--public-key", str(key_file), "--json")
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout)["ok"] is True
    copy = _copy(root, tmp_path)
    _largest(copy).unlink()
    bad = _cli("verify", str(copy), "--public-key", str(key_file))
    assert bad.returncode == 1
    assert "NOT PROVEN deleted-file" in bad.stdout
    usage = _cli("verify", str(tmp_path / "nowhere"), "--public-key", str(key_file))
    assert usage.returncode == 2


def test_a_proof_of_one_event_verifies_offline_and_only_as_given(
    exported: tuple[Path, list[VerifierKey]], tmp_path: Path
) -> None:
    root, keys = exported
    line = gzip.decompress(_largest(root).read_bytes()).splitlines()[3]
    event_id = json.loads(line)["ApiEvent"]["EventId"]
    proof = prove(LocalDirectory(root), event_id, keys)
    assert verify_proof(proof, keys)["EventId"] == event_id
    changed = dict(proof, line=proof["line"].replace('"Version":"2"', '"Version":"3"'))
    with pytest.raises(ValueError, match="root"):
        verify_proof(changed, keys)
    with pytest.raises(ValueError, match="trusted"):
        verify_proof(proof, [SigningKey.generate(keys[0].name).verifier])
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof))
    key_file = tmp_path / "keys.pub"
    key_file.write_text(keys[0].text + "\n")
    assert _cli("verify-proof", str(path), "--public-key", str(key_file)).returncode == 0
    path.write_text(json.dumps(changed))
    assert _cli("verify-proof", str(path), "--public-key", str(key_file)).returncode == 1


def test_verifier_keys_through_the_api(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    response = api.events.GetVerifierKeys(audit_log_pb2.GetVerifierKeysRequest())
    assert [VerifierKey.parse(k) for k in response.verifier_keys] == _keys(process.data_dir)
    assert response.origin.startswith("auditline/")
    keys = _objects(process.data_dir) / "integrity" / "keys"
    published = wait_for(
        lambda: list(keys.glob("*.pub")) or None, timeout=30, what="the published key"
    )
    assert [p.read_text().strip() for p in published] == list(response.verifier_keys)


def test_proven_across_restarts_rotation_outage_and_kill_9(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    args = ["--export-interval", "0.3", "--audit-durability", "sync"]
    first = ServeProcess(data_dir, args=args, env=ADMIN).start()
    _calls(first.target, 20)
    assert first.terminate() == 0
    # A new signing key (rotation): the old one stays listed and still verifies.
    rotated = tmp_path / "rotated.key"
    rotated.write_text(
        SigningKey.generate(f"auditline/{(data_dir / 'node-id').read_text().strip()}").text
    )
    second = ServeProcess(
        data_dir, args=[*args, "--audit-signing-key-file", str(rotated)], env=ADMIN
    ).start()
    _calls(second.target, 20)
    os.kill(second.proc.pid, signal.SIGKILL)  # sync mode: every answered call is spooled
    second.proc.wait(10)
    third = ServeProcess(
        data_dir, args=[*args, "--audit-signing-key-file", str(rotated)], env=ADMIN
    ).start()
    _calls(third.target, 10)
    assert third.terminate() == 0
    keys = _keys(data_dir)
    assert len(keys) == 2
    report = _verify(_objects(data_dir), keys)
    assert report.findings == []
    assert report.ok
    assert len(report.nodes[0].keys) == 2
    # With only the old key, the rotated part is not proven.
    assert "untrusted-checkpoint" in _kinds(_verify(_objects(data_dir), keys[:1]))


@pytest.mark.seaweedfs
def test_tampering_on_seaweedfs_is_found(serve: ServeFactory, seaweedfs: SeaweedFS) -> None:
    bucket = f"proof-{uuid.uuid4().hex[:10]}"
    client = seaweedfs.client()
    client.create_bucket(Bucket=bucket)  # no object lock: the test tampers with it
    env = ADMIN | {
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
    }
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
        _calls(process.target, 20)
        _wait_past(manifests, before)
    assert process.terminate() == 0
    keys = _keys(process.data_dir)
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
    assert {"modified-file", "missing-events", "deleted-file"} <= _kinds(report)
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
    _calls(process.target, 10)
    assert process.terminate() == 0
    keys = _keys(process.data_dir)
    root = process.data_dir / "objects" / bucket / "objects"
    files = sorted(p for p in root.rglob("*.jsonl.zst"))
    assert files
    assert all("/iam/" in p.as_posix() for p in files)
    report = _verify(root, keys)
    assert report.findings == []
    assert report.ok
    manifests = [json.loads(p.read_text()) for p in _manifests(root)]
    assert any(m["omitted"] for m in manifests)  # the account API events' leaves
    # One field of one OCSF record changed (the status, say): not the record its event makes.
    import zstandard

    path = files[0]
    lines = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes()).splitlines()
    record = json.loads(lines[0])
    record["status_id"] = 2 if record["status_id"] == 1 else 1
    changed = [json.dumps(record).encode(), *lines[1:]]
    path.write_bytes(zstandard.ZstdCompressor().compress(b"".join(x + b"\n" for x in changed)))
    report = _verify(root, keys)
    assert {"modified-file", "unreadable-line", "missing-events"} <= _kinds(report)
