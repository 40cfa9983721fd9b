"""What a manifest says beside its checkpoint (where the tree began, which files hold
which events, which events the exporter left out) is signed with it: rewritten, or a
copy of a manifest added, it no longer passes for the node's. And a hostile or
damaged object is a finding, never a crash that stops the verification."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from auditline.audit.v1 import event_pb2
from auditline.interceptor import DirectoryWriter, Exporter, ExporterConfig, Spool, read_exported
from auditline.interceptor._leaf import event_leaf, read_line
from auditline.interceptor.integrity import (
    LocalDirectory,
    Notary,
    SigningKey,
    Verifier,
    prove,
    verify_proof,
)
from tests.support.signed_logs import export_batches

Manifest = tuple[Path, dict[str, Any]]


def _log(root: Path, key: SigningKey) -> Path:
    """Events 1..20 in four batches of five (one uncompressed file each), then an idle
    checkpoint."""
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(root / "spool.db", node_id="n")
    config = ExporterConfig(name="a", compression="none")
    exporter = Exporter(config, spool, DirectoryWriter(root / "out"), node_id="n", notary=notary)
    now = time.time_ns()
    for batch in range(4):
        for i in range(5):
            event = event_pb2.ApiEvent(
                event_name=f"Call{batch}{i}", event_id=f"e-{batch}-{i}", version="2"
            )
            event.request.request_time.FromNanoseconds(now)
            event.response.response_time.FromNanoseconds(now)
            spool.emit(event)
        assert spool.flush(10)
        while exporter.export_once():
            pass
    exporter.checkpoint_idle()
    spool.close()
    return root / "out"


def _batches(out: Path) -> list[Manifest]:
    found = [(p, json.loads(p.read_text())) for p in sorted(out.rglob("manifests/*.json"))]
    return [(p, m) for p, m in found if m["files"]]


def _write(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(manifest))


def _head_cut_and_base_moved(out: Path) -> None:
    """Events 1..5 deleted, and the next manifest made to say the tree began after them."""
    (first, gone), (second, manifest) = _batches(out)[:2]
    for entry in gone["files"]:
        (out / entry["key"]).unlink()
    first.unlink()
    manifest["tree_base"] = 5
    _write(second, manifest)


def _copy_with_a_forged_event(out: Path) -> None:
    """Nothing changed or deleted: a copy of the first manifest, listed after it, names
    one more file, which holds a forged event numbered outside the batch."""
    path, manifest = _batches(out)[0]
    genuine = out / manifest["files"][0]["key"]
    record = json.loads(genuine.read_bytes().splitlines()[0])
    record["ApiEvent"].update(Sequence="999", EventName="DeleteEverything", EventId="forged")
    body = json.dumps(record).encode() + b"\n"
    forged = genuine.with_name("n-000000000999-000000000999.jsonl")
    forged.write_bytes(body)
    entry = {**manifest["files"][0], "key": str(forged.relative_to(out)), "seqs": [[999, 999]]}
    entry.update(sha256=hashlib.sha256(body).hexdigest(), bytes=len(body))
    manifest["files"].append(entry)
    _write(path.with_name(path.stem + "z.json"), manifest)


def _event_passed_off_as_left_out(out: Path) -> None:
    """An event taken out of its file, and its leaf put among those the exporter
    leaves out, so that the tree still adds up."""
    path, manifest = _batches(out)[2]
    data = out / manifest["files"][0]["key"]
    lines = data.read_bytes().splitlines()
    victim = lines.pop(2)
    body = b"".join(line + b"\n" for line in lines)
    data.write_bytes(body)
    seq = int(read_line("apievent-json", victim)["Sequence"])
    leaf = event_leaf(read_line("apievent-json", victim))
    manifest["files"][0].update(
        sha256=hashlib.sha256(body).hexdigest(),
        bytes=len(body),
        seqs=[[s, s] for s in range(manifest["first_seq"], manifest["last_seq"] + 1) if s != seq],
    )
    manifest["omitted"] = [[seq, base64.b64encode(leaf).decode()]]
    _write(path, manifest)


def _batch_unlisted(out: Path) -> None:
    """A middle batch's files deleted, and its manifest made to list none."""
    path, manifest = _batches(out)[1]
    for entry in manifest["files"]:
        (out / entry["key"]).unlink()
    manifest["files"] = []
    _write(path, manifest)


ATTACKS: dict[str, tuple[Callable[[Path], None], set[str]]] = {
    "a cut head, the tree's base moved": (
        _head_cut_and_base_moved,
        {"unsigned-manifest", "missing-events"},
    ),
    "an added manifest naming a forged event": (
        _copy_with_a_forged_event,
        {"malformed-manifest", "uncovered-file"},  # its events outside its batch
    ),
    "an event passed off as left out": (_event_passed_off_as_left_out, {"unsigned-manifest"}),
    "a batch deleted and unlisted": (_batch_unlisted, {"unsigned-manifest", "missing-events"}),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_rewritten_or_added_manifest_is_found(tmp_path: Path, attack: str) -> None:
    key = SigningKey.generate("test/n")
    out = _log(tmp_path, key)
    assert Verifier(LocalDirectory(out), [key.verifier]).run().ok
    mutate, expected = ATTACKS[attack]
    mutate(out)
    report = Verifier(LocalDirectory(out), [key.verifier]).run()
    assert not report.ok
    assert expected <= {f.kind for f in report.findings}, report.findings


HOSTILE: dict[str, Callable[[dict[str, Any]], Any]] = {
    "not an object": lambda m: [m],
    "a number for its checkpoint": lambda m: {**m, "checkpoint": 5},
    "a list for its node": lambda m: {**m, "node": ["n"]},
    "an object for its files": lambda m: {**m, "files": {}},
    "a file without its events": lambda m: {**m, "files": [{"key": "k", "sha256": "0"}]},
    "left-out events that are not pairs": lambda m: {**m, "omitted": [5]},
    "text for its tree's base": lambda m: {**m, "tree_base": "x"},
    "a negative frontier": lambda m: {**m, "frontier": {"size": -1, "hashes": ["AA=="]}},
    "a time with no zone": lambda m: {**m, "created": "2026-12-07T10:00:00"},
    # A span that would cost the verifier its time and memory (it looped on it).
    "a batch of a trillion events": lambda m: {**m, "last_seq": 10**12},
    "a file's events outside its batch": lambda m: {
        **m,
        "files": [{**m["files"][0], "seqs": [[1, 10**12]]}],
    },
}


@pytest.mark.parametrize("shape", HOSTILE)
def test_a_hostile_manifest_is_a_finding_not_a_crash(tmp_path: Path, shape: str) -> None:
    key = SigningKey.generate("test/n")
    out = _log(tmp_path, key)
    path, manifest = _batches(out)[0]
    path.with_name("000000000000-hostile.json").write_text(json.dumps(HOSTILE[shape](manifest)))
    since = Verifier(LocalDirectory(out), [key.verifier], since=_aware(manifest["created"]))
    for verifier in (Verifier(LocalDirectory(out), [key.verifier]), since):
        report = verifier.run()
        assert [f.kind for f in report.findings] == ["malformed-manifest"], report.findings


def test_a_line_that_is_not_an_object_is_a_finding(tmp_path: Path) -> None:
    key = SigningKey.generate("test/n")
    out = _log(tmp_path, key)
    data = out / _batches(out)[0][1]["files"][0]["key"]
    data.write_bytes(data.read_bytes() + b"[]\n")
    report = Verifier(LocalDirectory(out), [key.verifier]).run()
    assert {"modified-file", "unreadable-line"} <= {f.kind for f in report.findings}


def _aware(created: str) -> datetime.datetime:
    """An hour before `created`: a `--since` that takes every manifest."""
    return datetime.datetime.fromisoformat(created) - datetime.timedelta(hours=1)


def test_two_exporters_of_one_node_in_one_bucket_are_each_proven(tmp_path: Path) -> None:
    """A second exporter under its own prefix (a findings log beside the rest, say)
    cuts its own batches: each log is proven by itself. Taken for one log, the two
    were found inconsistent, or one's manifests hid the other's."""
    key = SigningKey.generate("test/n")
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(tmp_path / "spool.db", node_id="n")
    writer = DirectoryWriter(tmp_path / "out")
    iam = frozenset({event_pb2.LOG_TYPE_IAM})
    exporters = [
        Exporter(
            ExporterConfig(name="a", compression="none"), spool, writer, node_id="n", notary=notary
        ),
        Exporter(
            ExporterConfig(
                name="iam", prefix="iam/", compression="none", log_types=iam, max_file_bytes=1024
            ),
            spool,
            writer,
            node_id="n",
            notary=notary,
        ),
    ]
    unspecified, iam_log = event_pb2.LOG_TYPE_UNSPECIFIED, event_pb2.LOG_TYPE_IAM
    export_batches(spool, exporters, [[unspecified, iam_log] * 3] * 3)
    report = Verifier(LocalDirectory(tmp_path / "out"), [key.verifier]).run()
    assert report.ok, report.findings
    assert [(n.node, n.prefix, n.tree_size) for n in report.nodes] == [
        ("n", "", 18),
        ("n", "iam/", 18),
    ]


def test_a_manifest_reads_nothing_outside_the_location(tmp_path: Path) -> None:
    """Its keys are the bucket writer's to choose: one naming a file outside the
    directory being verified is a file that is not there, not a file read."""
    outside = tmp_path / "outside.txt"
    outside.write_text("not the log's")
    root = tmp_path / "log"
    root.mkdir()
    location = LocalDirectory(root)
    assert location.read("../outside.txt") is None
    assert location.read(str(outside)) is None
    (root / "inside.txt").write_text("the log's")
    assert location.read("inside.txt") == b"the log's"


def test_manifests_written_before_their_contents_were_signed_still_prove_their_events(
    tmp_path: Path,
) -> None:
    """auditline-manifest/1 signed its checkpoint only: each is reported, and what
    its checkpoint proves still is, down to one event's proof."""
    key = SigningKey.generate("test/n")
    out = _log(tmp_path, key)
    for path in out.rglob("manifests/*.json"):
        manifest = json.loads(path.read_text())
        del manifest["manifest_note"]
        manifest["manifest"] = "auditline-manifest/1"
        _write(path, manifest)
    report = Verifier(LocalDirectory(out), [key.verifier]).run()
    assert {f.kind for f in report.findings} == {"unsigned-manifest"}
    assert report.nodes[0].tree_size == 20
    event = next(iter(read_exported(LocalDirectory(out))))
    proof = prove(LocalDirectory(out), event.document["EventId"], [key.verifier])
    assert verify_proof(proof, [key.verifier])["EventId"] == event.document["EventId"]


def test_an_event_of_a_log_beside_one_begun_later_is_proven(tmp_path: Path) -> None:
    """Two logs of one node (a findings log made later under its own prefix): each
    keeps its own leaves for proofs. They were kept by node, and the later log's
    replaced the first's: its early events had no proof."""
    key = SigningKey.generate("test/n")
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(tmp_path / "spool.db", node_id="n")
    writer = DirectoryWriter(tmp_path / "out")
    main = Exporter(ExporterConfig(name="a"), spool, writer, node_id="n", notary=notary)
    now = time.time_ns()

    def emit(count: int) -> None:
        for _ in range(count):
            event = event_pb2.ApiEvent(event_name="Call", event_id=uuid.uuid4().hex, version="2")
            event.request.request_time.FromNanoseconds(now)
            event.response.response_time.FromNanoseconds(now)
            spool.emit(event)
        assert spool.flush(10)

    emit(6)
    while main.export_once():
        pass
    later = Exporter(
        ExporterConfig(name="b", prefix="later/"), spool, writer, node_id="n", notary=notary
    )
    emit(6)
    for exporter in (main, later):
        while exporter.export_once():
            pass
    spool.close()
    location = LocalDirectory(tmp_path / "out")
    assert Verifier(location, [key.verifier]).run().ok
    first = next(e for e in read_exported(location) if e.document["Sequence"] == "1")
    proof = prove(location, first.document["EventId"], [key.verifier])
    assert verify_proof(proof, [key.verifier])["Sequence"] == "1"
