"""A destination's log goes on: an exporter made where a deleted one wrote continues
that log rather than exporting its events again, and one that comes back after
writing elsewhere signs where its log resumes (`resume_text`). Both verified as
tampered before (found by a review helper): an ordinary delete and re-create, or an
audit target moved A → B → A, raised the verifier's gravest findings."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import orjson
import pytest

from auditline.audit.v1 import event_pb2
from auditline.interceptor import DirectoryWriter, Exporter, ExporterConfig, Spool, read_exported
from auditline.interceptor._export_config import destination_of
from auditline.interceptor._note import open_note
from auditline.interceptor.integrity import (
    LocalDirectory,
    Notary,
    SigningKey,
    Verifier,
    prove,
    verify_proof,
)
from auditline.interceptor.integrity import Report as VerifyReport


def _emit(spool: Spool, count: int) -> None:
    for i in range(count):
        event = event_pb2.ApiEvent(event_name=f"Call{i}", version="2")
        event.request.request_time.FromNanoseconds(time.time_ns())
        event.response.response_time.FromNanoseconds(time.time_ns())
        spool.emit(event)
    assert spool.flush(10)


def _drain(exporter: Exporter) -> None:
    while exporter.export_once():
        pass


def _verify(root: Path, key: SigningKey) -> VerifyReport:
    return Verifier(LocalDirectory(root), [key.verifier]).run()


def _manifests(root: Path) -> list[Path]:
    return sorted(root.glob("integrity/n/manifests/*.json"))


def _deleted_after_five(
    tmp_path: Path, config: ExporterConfig | None = None
) -> tuple[SigningKey, Notary, Spool, Path]:
    """Exporter `x` (or `config`) exports events 1..5 to a bucket and is deleted; the
    events stay spooled (kept for queries)."""
    key = SigningKey.generate("test/n")
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(tmp_path / "spool.db", node_id="n", retain_seconds=3600)
    bucket = tmp_path / "bucket"
    first = Exporter(
        config or ExporterConfig(name="x"),
        spool,
        DirectoryWriter(bucket),
        node_id="n",
        notary=notary,
    )
    _emit(spool, 5)
    _drain(first)
    first.checkpoint_idle()
    spool.store.unregister("x")  # DeleteExporter
    return key, notary, spool, bucket


@pytest.mark.parametrize("settings", [{}, {"log_types": frozenset({event_pb2.LOG_TYPE_IAM})}])
def test_an_exporter_made_where_a_deleted_one_wrote_goes_on_with_its_log(
    tmp_path: Path, settings: dict[str, object]
) -> None:
    """The events are still spooled (kept for queries): the new exporter began at the
    oldest and cut them again; their manifests disagreed with the ones there, or
    (other settings, the same batch) collided, and it retried for good while the
    spool filled."""
    key, notary, spool, bucket = _deleted_after_five(tmp_path)
    spool.store.register("y")  # made at once, before the next events
    again = Exporter(
        ExporterConfig(name="y", **settings),  # type: ignore[arg-type]
        spool,
        DirectoryWriter(bucket),
        node_id="n",
        notary=notary,
    )
    _drain(again)  # nothing new: it only takes its place at the log's end
    assert spool.store.watermark("y") == 5
    _emit(spool, 5)
    _drain(again)
    again.checkpoint_idle()
    spool.close()
    report = _verify(bucket, key)
    assert report.findings == []
    assert (report.nodes[0].first_seq, report.nodes[0].last_seq) == (1, 10)
    assert report.nodes[0].not_here == []


def _there_and_back(tmp_path: Path, key: SigningKey) -> tuple[Path, Path]:
    """Exporter `default` (the audit target's) writes 1..5 to A, 6..10 to B, then
    11..15 to A again."""
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(tmp_path / "spool.db", node_id="n")
    a, b = tmp_path / "A", tmp_path / "B"
    exporter = Exporter(
        ExporterConfig(name="default"), spool, DirectoryWriter(a), node_id="n", notary=notary
    )
    for target in (None, b, a):
        if target is not None:
            exporter.retarget(DirectoryWriter(target))
        _emit(spool, 5)
        _drain(exporter)
    exporter.checkpoint_idle()
    spool.close()
    return a, b


def test_an_exporter_back_where_it_wrote_before_signs_where_its_log_resumes(
    tmp_path: Path,
) -> None:
    key = SigningKey.generate("test/n")
    a, b = _there_and_back(tmp_path, key)
    report = _verify(a, key)
    assert report.findings == []  # were: missing-events 6..10, inconsistent-checkpoints
    node = report.nodes[0]
    assert (node.first_seq, node.last_seq) == (1, 15)
    assert [(n.first_seq, n.last_seq) for n in node.not_here] == [(6, 10)]
    back = _verify(b, key)
    assert back.findings == []
    assert (back.nodes[0].first_seq, back.nodes[0].last_seq) == (6, 10)
    # Each event at A can be proven, before the resume and after it.
    events = list(read_exported(LocalDirectory(a)))
    assert [int(e.document["Sequence"]) for e in events] == [*range(1, 6), *range(11, 16)]
    for event in events:
        proof = prove(LocalDirectory(a), event.document["EventId"], [key.verifier])
        assert verify_proof(proof, [key.verifier])["EventId"] == event.document["EventId"]


def test_a_resume_note_covers_nothing_but_the_gap_it_was_signed_for(tmp_path: Path) -> None:
    key = SigningKey.generate("test/n")
    a, _ = _there_and_back(tmp_path, key)
    first, resumed = (m for m in _manifests(a) if orjson.loads(m.read_bytes())["files"])
    document = orjson.loads(resumed.read_bytes())
    assert "exporter_resume" in document
    # The batch before it deleted: the note is bound to that batch's checkpoint.
    saved = first.read_bytes()
    first.unlink()
    assert "missing-events" in [f.kind for f in _verify(a, key).findings]
    first.write_bytes(saved)
    # Signed by a key the verifier does not trust, or moved from its manifest: found.
    other = SigningKey.generate("test/n")
    text = open_note(document["exporter_resume"], [key.verifier]).text
    assert text.startswith("auditline-exporter-resume/1\ntest/n\nexporter default\nafter 5 ")
    forged = other.sign_note(text)
    resumed.chmod(0o644)
    resumed.write_bytes(orjson.dumps({**document, "exporter_resume": forged}))
    kinds = {f.kind for f in _verify(a, key).findings}
    assert {"missing-events", "inconsistent-checkpoints"} <= kinds
    without = {k: v for k, v in document.items() if k != "exporter_resume"}
    resumed.write_bytes(orjson.dumps(without))
    kinds = {f.kind for f in _verify(a, key).findings}
    assert {"missing-events", "inconsistent-checkpoints"} <= kinds


def test_where_a_destinations_log_ends_outlives_its_exporter(tmp_path: Path) -> None:
    key = SigningKey.generate("test/n")
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(tmp_path / "spool.db", node_id="n")
    writer = DirectoryWriter(tmp_path / "bucket")
    exporter = Exporter(ExporterConfig(name="x"), spool, writer, node_id="n", notary=notary)
    _emit(spool, 3)
    _drain(exporter)
    destination = destination_of(exporter.config, exporter.writer)
    end = spool.store.destination_log(destination)
    assert end is not None
    assert (end.last_seq, end.size) == (3, 3)
    spool.store.unregister("x")
    assert spool.store.destination_log(destination) == end
    spool.close()


def _unlock(path: Path) -> None:
    path.chmod(0o644)


def test_a_manifest_of_another_log_of_the_node_does_not_pass_for_one_of_this(
    tmp_path: Path,
) -> None:
    """Each destination's log is named in its manifests (`log`): a genuine manifest
    of the node's log elsewhere, with its resume note, copied in, hid the deletion of
    a batch (its checkpoints are the node's, and fit any log of it); copied beside
    one of this log's, it hid a deleted file (found by a review helper)."""
    key = SigningKey.generate("test/n")
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(tmp_path / "spool.db", node_id="n")
    a, c, d = tmp_path / "A", tmp_path / "C", tmp_path / "D"
    x = Exporter(ExporterConfig(name="x"), spool, DirectoryWriter(a), node_id="n", notary=notary)
    y = Exporter(ExporterConfig(name="y"), spool, DirectoryWriter(c), node_id="n", notary=notary)
    for target in (None, d, c):  # y goes to D and back; x stays at A; the same batches
        if target is not None:
            y.retarget(DirectoryWriter(target))
        _emit(spool, 5)
        _drain(x)
        _drain(y)
    spool.close()
    assert _verify(a, key).findings == []
    for path in a.rglob("*"):  # batch 6..10 deleted, C's 11..15 put in place of A's
        if path.is_file() and "000000000006-000000000010" in path.name:
            _unlock(path)
            path.unlink()
    for path in c.rglob("*"):
        if path.is_file() and path.name.startswith("000000000011-000000000015"):
            target = a / path.relative_to(c)
            _unlock(target)
            target.write_bytes(path.read_bytes())
    kinds = {f.kind for f in _verify(a, key).findings}
    assert {"foreign-manifest", "missing-events"} <= kinds
    # Beside this log's own manifest of the batch: the two disagree.
    (own,) = (m for m in _manifests(c) if m.name.startswith("000000000001-000000000005"))
    copy = _manifests(a)[0].with_name("000000000001-000000000005-copy.json")
    copy.write_bytes(own.read_bytes())
    assert "conflicting-manifests" in {f.kind for f in _verify(a, key).findings}


def test_an_emptied_destination_begins_a_new_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The spool remembered a log whose objects were deleted (the bucket emptied and
    made again): the next exporter skipped the spooled events and its log verified
    as headless (found by a review helper). The last manifest is looked for first."""
    key, notary, spool, bucket = _deleted_after_five(tmp_path)
    for path in bucket.rglob("*"):
        if path.is_file():
            _unlock(path)
    shutil.rmtree(bucket)
    again = Exporter(
        ExporterConfig(name="y"), spool, DirectoryWriter(bucket), node_id="n", notary=notary
    )
    _emit(spool, 3)
    _drain(again)
    spool.close()
    report = _verify(bucket, key)
    assert report.findings == []
    assert (report.nodes[0].first_seq, report.nodes[0].last_seq) == (1, 8)
    assert "a new log begins there" in caplog.text


def test_an_exporter_of_more_log_types_than_the_log_it_goes_on_with_says_what_is_not_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    iam = ExporterConfig(name="x", log_types=frozenset({event_pb2.LOG_TYPE_IAM}))
    _, notary, spool, bucket = _deleted_after_five(tmp_path, iam)
    every = Exporter(
        ExporterConfig(name="y"), spool, DirectoryWriter(bucket), node_id="n", notary=notary
    )
    _drain(every)
    spool.close()
    assert "its events 1..5 of log types account_api" in caplog.text


def test_a_destination_reached_by_another_path_is_the_same_log(tmp_path: Path) -> None:
    """Another spelling of the same place (a symbolic link, an S3 endpoint written
    otherwise) begins a log of another name there that goes straight on from the
    last checkpoint: no foreign manifest (found by a review helper)."""
    key = SigningKey.generate("test/n")
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(tmp_path / "spool.db", node_id="n")
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (tmp_path / "alias").symlink_to(bucket)
    exporter = Exporter(
        ExporterConfig(name="default"), spool, DirectoryWriter(bucket), node_id="n", notary=notary
    )
    for target in (None, tmp_path / "alias"):
        if target is not None:
            exporter.retarget(DirectoryWriter(target))
        _emit(spool, 5)
        _drain(exporter)
    spool.close()
    report = _verify(bucket, key)
    assert report.findings == []
    assert (report.nodes[0].first_seq, report.nodes[0].last_seq) == (1, 10)
