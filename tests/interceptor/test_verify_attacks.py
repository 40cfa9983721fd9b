"""Attacks on the exported log by someone who can write its bucket but holds no node's
signing key (found by a review helper): each once verified, or made a proof that
`verify-proof` accepted."""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
import uuid
from pathlib import Path

import orjson
import pytest

from auditline.audit.v1 import event_pb2
from auditline.interceptor import DirectoryWriter, Exporter, ExporterConfig, Spool, read_exported
from auditline.interceptor._keys import data_file
from auditline.interceptor._leaf import LineError, read_line
from auditline.interceptor._merkle import ProofError
from auditline.interceptor.integrity import (
    LocalDirectory,
    Notary,
    S3Location,
    SigningKey,
    Verifier,
    expected_from_report,
    prove,
    verify_proof,
)
from tests.interceptor.test_verify_manifests import _batches, _log
from tests.support.seaweedfs import SeaweedFS
from tests.support.signed_logs import export_batches


def _kinds(out: Path, *keys: SigningKey) -> list[str]:
    return [
        f.kind for f in Verifier(LocalDirectory(out), [k.verifier for k in keys]).run().findings
    ]


def _proof(out: Path, key: SigningKey) -> dict[str, object]:
    event = next(iter(read_exported(LocalDirectory(out))))
    return prove(LocalDirectory(out), event.document["EventId"], [key.verifier])


def test_a_proof_holds_only_the_line_its_exporter_wrote(tmp_path: Path) -> None:
    """A record with other fields beside its `ApiEvent`, or a key twice (readers that
    keep the first see another value than the one proven), was proven as the event."""
    key = SigningKey.generate("test/n")
    out = _log(tmp_path, key)
    proof = _proof(out, key)
    assert verify_proof(proof, [key.verifier])
    line = str(proof["line"]).rstrip("\n")
    record = orjson.loads(line)
    beside = orjson.dumps({**record, "user_name": "mallory"}).decode()
    with pytest.raises(LineError, match="beside its ApiEvent"):
        read_line("apievent-json", beside.encode())
    with pytest.raises(LineError):
        verify_proof({**proof, "line": beside}, [key.verifier])
    name = record["ApiEvent"]["EventName"]
    twice = line.replace(f'"EventName":"{name}"', f'"EventName":"Evil","EventName":"{name}"')
    assert twice != line
    with pytest.raises(ProofError, match="a key twice"):
        verify_proof({**proof, "line": twice}, [key.verifier])


def test_no_proof_is_made_from_a_changed_file(tmp_path: Path) -> None:
    """`prove` took the line from a file the verifier had found changed."""
    key = SigningKey.generate("test/n")
    out = _log(tmp_path, key)
    event = next(iter(read_exported(LocalDirectory(out))))
    data = out / event.key
    lines = data.read_bytes().splitlines(keepends=True)
    data.write_bytes(b"".join(lines) + b"\n")  # the events as they were; the file not
    assert "modified-file" in _kinds(out, key)
    with pytest.raises(ProofError, match="modified-file"):
        prove(LocalDirectory(out), event.document["EventId"], [key.verifier])


@pytest.mark.parametrize(
    "name",
    [
        "{day}/n-000000000021-000000000021.jsonl\n",  # `$` matched before the newline
        "{day}/integrity/n-000000000021-000000000021.jsonl",
        "{day}/n-000000000022-000000000022.json",
        "{day}/n-000000000023-000000000023.jsonl.1",
        "events.csv",
    ],
)
def test_every_object_no_manifest_names_is_found(tmp_path: Path, name: str) -> None:
    """Readers of the folders (a glob, a SIEM's input, a table) take any file there for
    events; only files whose names end in a data file's suffix were checked."""
    key = SigningKey.generate("test/n")
    out = _log(tmp_path, key)
    day = next(out.rglob("*.jsonl")).parent.relative_to(out).as_posix()
    forged = out / name.format(day=day)
    forged.parent.mkdir(parents=True, exist_ok=True)
    forged.write_text('{"ApiEvent":{"EventName":"DeleteEverything","Sequence":"21"}}\n')
    assert _kinds(out, key) in (["uncovered-file"], ["unexpected-object"])
    assert data_file(forged.relative_to(out).as_posix()) is None or name.endswith(".jsonl")


def test_a_prefix_with_integrity_in_it_is_a_prefix(tmp_path: Path) -> None:
    """The manifests' prefix was taken up to the first "integrity/" in the key."""
    key = SigningKey.generate("test/n")
    out = _log(tmp_path, key)
    moved = tmp_path / "moved"
    (moved / "x-integrity").mkdir(parents=True)
    out.rename(moved / "x-integrity" / "logs")
    assert _kinds(moved, key) == []


@pytest.mark.seaweedfs
def test_delete_markers_and_new_versions_under_object_lock_are_found(
    tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    """A plain DELETE under object lock adds a delete marker: a listing of current
    objects (and `aws s3 sync`) no longer saw the log's last batch, its manifest and
    its idle checkpoint, and the shortened log verified. A new version of other bytes
    is allowed too. The locked versions are read, and both are reported."""
    key = SigningKey.generate("test/n")
    out = _log(tmp_path, key)
    client = seaweedfs.client()
    bucket = f"lock-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        client.put_object(
            Bucket=bucket,
            Key=path.relative_to(out).as_posix(),
            Body=path.read_bytes(),
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=until,
        )
    location = S3Location(bucket, "", client)
    report = Verifier(location, [key.verifier]).run()
    assert report.ok, report.findings
    last_manifest, manifest = _batches(out)[-1]
    hidden = [manifest["files"][0]["key"], last_manifest.relative_to(out).as_posix()]
    hidden += [p.relative_to(out).as_posix() for p in out.rglob("manifests/*-*-*-*.json")]
    for name in hidden:
        client.delete_object(Bucket=bucket, Key=name)  # a marker; the version stays
    first = _batches(out)[0][1]["files"][0]["key"]
    client.put_object(Bucket=bucket, Key=first, Body=b'{"ApiEvent":{}}\n')
    report = Verifier(location, [key.verifier]).run()
    found = {(f.kind, f.key) for f in report.findings}
    assert found == {("deleted-object", name) for name in hidden} | {("overwritten-object", first)}
    assert report.nodes[0].tree_size == 20  # the whole log, read from its first versions


def _two_logs(root: Path, key: SigningKey, *, b: ExporterConfig) -> tuple[Spool, list[Exporter]]:
    """A spool, and two exporters of it into ROOT/out, uncompressed: "a" at the root,
    and `b` (under "b/" unless it names a prefix)."""
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(root / "spool.db", node_id="n")
    second = dataclasses.replace(b, prefix=b.prefix or "b/", compression="none")
    return spool, [
        Exporter(config, spool, DirectoryWriter(root / "out"), node_id="n", notary=notary)
        for config in (ExporterConfig(name="a", compression="none"), second)
    ]


def test_a_manifest_of_a_log_cut_at_the_same_events_is_foreign(tmp_path: Path) -> None:
    """Two exporters of one node in one bucket cut the same batches; one leaves the
    IAM log out. Its manifest of a batch, put in place of the other's, made that
    batch's IAM events "left out": their file deleted, the log verified (found by a
    review helper). Another log's manifest goes on only with the node's note that the
    log begins again there."""
    key = SigningKey.generate("test/n")
    out = tmp_path / "out"
    only_api = frozenset({event_pb2.LOG_TYPE_ACCOUNT_API})
    spool, exporters = _two_logs(tmp_path, key, b=ExporterConfig(name="b", log_types=only_api))
    api, iam = event_pb2.LOG_TYPE_ACCOUNT_API, event_pb2.LOG_TYPE_IAM
    export_batches(spool, exporters, [[api, iam] * 2] * 3)
    assert _kinds(out, key) == []
    theirs = next((out / "b/integrity/n/manifests").glob("000000000005-000000000008-*.json"))
    ours = next((out / "integrity/n/manifests").glob("000000000005-000000000008-*.json"))
    for entry in json.loads(ours.read_text())["files"]:
        if "/iam/" in entry["key"]:
            (out / entry["key"]).unlink()
    ours.unlink()
    (ours.parent / theirs.name).write_bytes(theirs.read_bytes())
    assert "foreign-manifest" in _kinds(out, key)


def test_a_write_a_crash_cut_short_is_no_finding(tmp_path: Path) -> None:
    """The directory writer's temporary file, left by a crash beside the file it was
    writing, is not an object of the log (found by a review helper)."""
    key = SigningKey.generate("test/n")
    out = _log(tmp_path, key)
    folder = next(out.rglob("*.jsonl")).parent
    (folder / ".put-abc123").write_bytes(b'{"ApiEvent":')
    assert _kinds(out, key) == []


def test_an_event_is_proven_from_a_log_with_no_finding(tmp_path: Path) -> None:
    """Two logs of one node hold the event; the other one's file is deleted. The
    event is proven from the intact log (a finding of the other one, of the same node
    and events, refused it: found by a review helper), and from neither once its own
    file is changed too."""
    key = SigningKey.generate("test/n")
    out = tmp_path / "out"
    spool, exporters = _two_logs(tmp_path, key, b=ExporterConfig(name="b", prefix="other/"))
    export_batches(spool, exporters, [[event_pb2.LOG_TYPE_UNSPECIFIED] * 5], idle=True)
    theirs = next(p for p in out.rglob("*.jsonl") if p.is_relative_to(out / "other"))
    theirs.unlink()
    assert "deleted-file" in _kinds(out, key)
    proof = prove(LocalDirectory(out), "e-0", [key.verifier])
    assert verify_proof(proof, [key.verifier])["EventId"] == "e-0"
    ours = next(p for p in out.rglob("*.jsonl") if not p.is_relative_to(out / "other"))
    ours.write_bytes(ours.read_bytes() + b"\n")
    with pytest.raises(ProofError, match="not proven"):
        prove(LocalDirectory(out), "e-0", [key.verifier])


def test_a_tail_cut_whole_shows_against_an_earlier_report(tmp_path: Path) -> None:
    """Everything of the last batch deleted (its file, its manifest, the idle
    checkpoint after it) verifies as a shorter log; the whole log deleted, as nothing.
    Against the report of a run before, both show; an intact log still verifies."""
    key = SigningKey.generate("test/n")
    out = _log(tmp_path, key)
    earlier = Verifier(LocalDirectory(out), [key.verifier]).run()
    assert earlier.ok
    assert earlier.nodes[0].checkpoint
    saved = tmp_path / "earlier.json"
    saved.write_text(json.dumps(earlier.as_dict()))
    expected = expected_from_report(json.loads(saved.read_text()))

    def kinds() -> list[str]:
        verifier = Verifier(LocalDirectory(out), [key.verifier], expected=expected)
        return [finding.kind for finding in verifier.run().findings]

    assert kinds() == []
    last, manifest = _batches(out)[-1]
    (out / manifest["files"][0]["key"]).unlink()
    last.unlink()
    for idle in out.rglob("manifests/*-*-*-*.json"):
        idle.unlink()
    assert _kinds(out, key) == []  # alone, a shorter log
    assert kinds() == ["rolled-back"]
    shutil.rmtree(out / "integrity")
    for data in out.rglob("*.jsonl"):
        data.unlink()
    assert kinds() == ["missing-log"]
    with pytest.raises(ValueError, match="window"):
        Verifier(
            LocalDirectory(out),
            [key.verifier],
            since=datetime.datetime.now(datetime.UTC),
            expected=expected,
        )
