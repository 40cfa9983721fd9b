"""An exporter made after the node's first events left the spool: its log begins later,
and its first manifest carries the signed note that says so. The verifier takes it
for the log's beginning, and only it: a destination whose first manifests are gone
is still found out."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

from auditline.audit.v1 import event_pb2
from auditline.interceptor import (
    DirectoryWriter,
    Exporter,
    ExporterConfig,
    Pipeline,
    Spool,
    read_exported,
)
from auditline.interceptor.integrity import (
    LocalDirectory,
    Notary,
    SigningKey,
    Verifier,
    prove,
    verify_proof,
)
from tests.support.processes import wait_for

HOUR_NS = 3600 * 10**9


def _emit(
    spool: Spool,
    count: int,
    at_ns: int,
    log_type: event_pb2.LogType.ValueType = event_pb2.LOG_TYPE_UNSPECIFIED,
) -> None:
    for i in range(count):
        event = event_pb2.ApiEvent(event_name=f"Call{i}", version="2", log_type=log_type)
        event.request.request_time.FromNanoseconds(at_ns)
        event.response.response_time.FromNanoseconds(at_ns)
        spool.emit(event)
    assert spool.flush(10)


def _late_exporter_log(tmp_path: Path, key: SigningKey) -> Path:
    """Events 1..10 exported by `a` and gone from the spool (out of the retention
    window); then `b` is made, and exports events 11..18 in several files."""
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(tmp_path / "spool.db", node_id="n", retain_seconds=3600)
    first = Exporter(
        ExporterConfig(name="a"), spool, DirectoryWriter(tmp_path / "a"), node_id="n", notary=notary
    )
    _emit(spool, 10, time.time_ns() - 2 * HOUR_NS)
    while first.export_once():
        pass
    assert spool.store.read(0, 100) == []  # all gone: b cannot start before 11
    later = Exporter(
        ExporterConfig(name="b", max_file_bytes=1024, compression="none"),
        spool,
        DirectoryWriter(tmp_path / "b"),
        node_id="n",
        notary=notary,
    )
    _emit(spool, 8, time.time_ns())
    batches = 0
    while later.export_once():
        batches += 1
    assert batches >= 2
    spool.close()
    return tmp_path / "b"


def _manifests(root: Path) -> list[Path]:
    return sorted(root.glob("integrity/n/manifests/*.json"))


def _kinds(root: Path, key: SigningKey) -> list[str]:
    report = Verifier(LocalDirectory(root), [key.verifier]).run()
    return [finding.kind for finding in report.findings]


def test_a_log_that_begins_later_is_proven(tmp_path: Path) -> None:
    key = SigningKey.generate("test/n")
    root = _late_exporter_log(tmp_path, key)
    report = Verifier(LocalDirectory(root), [key.verifier]).run()
    assert report.findings == []
    assert report.nodes[0].first_seq == 11
    first, *rest = _manifests(root)
    assert "exporter_start" in orjson.loads(first.read_bytes())
    assert all("exporter_start" not in orjson.loads(m.read_bytes()) for m in rest)
    # And each of its events can be proven (there was no proof before its first).
    events = list(read_exported(LocalDirectory(root)))
    assert [int(e.document["Sequence"]) for e in events] == list(range(11, 19))
    for event in events:
        proof = prove(LocalDirectory(root), event.document["EventId"], [key.verifier])
        assert verify_proof(proof, [key.verifier])["EventId"] == event.document["EventId"]


def test_a_log_whose_first_manifest_is_gone_is_not(tmp_path: Path) -> None:
    key = SigningKey.generate("test/n")
    root = _late_exporter_log(tmp_path, key)
    _manifests(root)[0].unlink()
    assert "missing-events" in _kinds(root, key)


def test_the_note_fits_no_other_manifest_and_needs_a_trusted_key(tmp_path: Path) -> None:
    key = SigningKey.generate("test/n")
    root = _late_exporter_log(tmp_path, key)
    first, second, *_ = _manifests(root)
    note = orjson.loads(first.read_bytes())["exporter_start"]
    first.unlink()
    # The first manifest's note, moved onto the next: it names another first event.
    document = orjson.loads(second.read_bytes())
    second.write_bytes(orjson.dumps({**document, "exporter_start": note}))
    assert "missing-events" in _kinds(root, key)
    # A note for the right event, signed by a key the verifier does not trust.
    other = SigningKey.generate("test/n")
    forged = Notary(key=other, origin="test/n", node_id="n")
    text_note = forged.key.sign_note(
        f"auditline-exporter-start/1\ntest/n\nexporter b\nfirst {document['first_seq']}\n"
    )
    second.write_bytes(orjson.dumps({**document, "exporter_start": text_note}))
    assert "missing-events" in _kinds(root, key)
    # Trusted, but not the key that signed the manifest's checkpoint.
    report = Verifier(LocalDirectory(root), [key.verifier, other.verifier]).run()
    assert "missing-events" in [finding.kind for finding in report.findings]


def test_only_the_first_manifest_says_so_when_it_has_no_files(tmp_path: Path) -> None:
    """An exporter of one log whose first batch holds none of its events: that batch's
    manifest (no files) begins its log; the later ones do not say so again."""
    key = SigningKey.generate("test/n")
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(tmp_path / "spool.db", node_id="n")
    exporter = Exporter(
        ExporterConfig(name="iam", log_types=frozenset({event_pb2.LOG_TYPE_IAM})),
        spool,
        DirectoryWriter(tmp_path / "iam"),
        node_id="n",
        notary=notary,
    )
    for log_type in (event_pb2.LOG_TYPE_ACCOUNT_API, event_pb2.LOG_TYPE_IAM):
        _emit(spool, 3, time.time_ns(), log_type)
        while exporter.export_once():
            pass
    spool.close()
    root = tmp_path / "iam"
    first, *rest = _manifests(root)
    assert orjson.loads(first.read_bytes())["files"] == []
    assert "exporter_start" in orjson.loads(first.read_bytes())
    assert rest
    assert all("exporter_start" not in orjson.loads(m.read_bytes()) for m in rest)
    assert _kinds(root, key) == []


def test_an_exporter_deleted_and_made_again_under_its_name_begins_a_log(tmp_path: Path) -> None:
    """Its new log (a new destination, say) begins after events the spool has freed:
    its first manifest says so. The name's old log had begun, and the new one was
    taken for it: it verified as cut."""
    key = SigningKey.generate("test/n")
    spool = Spool(tmp_path / "spool.db", node_id="n")
    pipeline = Pipeline(spool, notary=Notary(key=key, origin="test/n", node_id="n"))
    config = ExporterConfig(name="x", flush_interval=0.05)
    pipeline.add_exporter(config, DirectoryWriter(tmp_path / "old"))
    _emit(spool, 5, time.time_ns())
    wait_for(lambda: spool.store.watermark("x") == 5 or None, timeout=10, what="1..5 exported")
    pipeline.remove_exporter("x", forget=True)
    assert spool.store.read(0, 100) == []  # freed, with no retention window
    pipeline.add_exporter(config, DirectoryWriter(tmp_path / "new"))
    _emit(spool, 5, time.time_ns())
    wait_for(lambda: spool.store.watermark("x") == 10 or None, timeout=10, what="6..10 exported")
    pipeline.close()
    report = Verifier(LocalDirectory(tmp_path / "new"), [key.verifier]).run()
    assert report.findings == []
    assert report.nodes[0].first_seq == 6


def _move(
    tmp_path: Path, first: tuple[ExporterConfig, Path], then: tuple[ExporterConfig, Path]
) -> SigningKey:
    """Exporter `x` exports events 1..5 to one destination; then the same exporter
    (its watermark kept) is set to write to another, and exports 6..10 there."""
    key = SigningKey.generate("test/n")
    spool = Spool(tmp_path / "spool.db", node_id="n")
    pipeline = Pipeline(spool, notary=Notary(key=key, origin="test/n", node_id="n"))
    for (config, root), upto in ((first, 5), (then, 10)):
        pipeline.add_exporter(config, DirectoryWriter(root))
        _emit(spool, 5, time.time_ns())
        wait_for(
            lambda upto=upto: spool.store.watermark("x") == upto or None,  # type: ignore[misc]
            timeout=10,
            what=f"1..{upto} exported",
        )
    pipeline.close()
    return key


def test_an_exporter_moved_to_another_directory_begins_a_log_there(tmp_path: Path) -> None:
    """The new destination's first manifest says that its log begins at 6; the old
    one ends at 5. Before, the exporter's log was taken to have begun wherever it
    wrote: the new destination verified as cut."""
    config = ExporterConfig(name="x", flush_interval=0.05)
    key = _move(tmp_path, (config, tmp_path / "old"), (config, tmp_path / "new"))
    old = Verifier(LocalDirectory(tmp_path / "old"), [key.verifier]).run()
    assert old.findings == []
    assert (old.nodes[0].first_seq, old.nodes[0].last_seq) == (1, 5)
    new = Verifier(LocalDirectory(tmp_path / "new"), [key.verifier]).run()
    assert new.findings == []
    assert (new.nodes[0].first_seq, new.nodes[0].last_seq) == (6, 10)


def test_an_exporter_given_another_prefix_begins_a_log_under_it(tmp_path: Path) -> None:
    """The same directory, another prefix: two logs, each proven."""
    root = tmp_path / "bucket"
    before = ExporterConfig(name="x", flush_interval=0.05, prefix="before/")
    after = ExporterConfig(name="x", flush_interval=0.05, prefix="after/")
    key = _move(tmp_path, (before, root), (after, root))
    report = Verifier(LocalDirectory(root), [key.verifier]).run()
    assert report.findings == []
    logs = {node.prefix: (node.first_seq, node.last_seq) for node in report.nodes}
    assert logs == {"before/": (1, 5), "after/": (6, 10)}
    # Opened at a prefix (`s3://BUCKET/PREFIX`), the log there verifies too: its
    # manifests name the files from the bucket's root (it found every file deleted).
    for prefix, span in (("before", (1, 5)), ("after", (6, 10))):
        report = Verifier(LocalDirectory(root / prefix), [key.verifier]).run()
        assert report.findings == []
        assert [(node.first_seq, node.last_seq) for node in report.nodes] == [span]


def test_a_spool_that_knew_only_that_a_log_had_begun_takes_it_for_the_same(
    tmp_path: Path,
) -> None:
    """Spools before the destination was kept: the log is taken to be where it was,
    with no second start note, and the destination is kept from the next batch; the
    table the release before knows is as it knew it (a rollback keeps working)."""
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE begun (exporter TEXT PRIMARY KEY)")
        db.execute("INSERT INTO begun VALUES ('x')")
    spool = Spool(path, node_id="n")
    assert spool.store.has_begun("x", "file:///anywhere\n")
    assert not spool.store.has_begun("y", "file:///anywhere\n")
    spool.store.register("x")
    spool.store.commit_files("x", [], watermark=0, since=0, destination="here")
    assert spool.store.has_begun("x", "here")
    assert not spool.store.has_begun("x", "elsewhere")
    spool.close()
    with sqlite3.connect(path) as db:  # what the release before writes, still accepted
        db.execute("INSERT OR IGNORE INTO begun VALUES ('z')")


def test_no_idle_checkpoint_where_the_log_has_not_begun(tmp_path: Path) -> None:
    """An exporter moved and stopped before its first batch there signs nothing there:
    a checkpoint would claim events that destination never had (it verified as cut)."""
    key = SigningKey.generate("test/n")
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(tmp_path / "spool.db", node_id="n")
    config = ExporterConfig(name="x")
    old = Exporter(config, spool, DirectoryWriter(tmp_path / "old"), node_id="n", notary=notary)
    _emit(spool, 5, time.time_ns())
    while old.export_once():
        pass
    new = Exporter(config, spool, DirectoryWriter(tmp_path / "new"), node_id="n", notary=notary)
    new.checkpoint_idle()
    old.checkpoint_idle()
    spool.close()
    assert list((tmp_path / "new").rglob("manifests/*")) == []
    report = Verifier(LocalDirectory(tmp_path / "old"), [key.verifier]).run()
    assert report.findings == []
    assert len(_manifests(tmp_path / "old")) == 2


def test_an_exporter_retargeted_during_a_batch_keeps_the_batch_together(tmp_path: Path) -> None:
    """The audit target moved while a batch was being written: the batch's files went
    to the old bucket and its manifest to the new one, and neither verified (found
    by a review helper). `retarget` takes effect from the next batch."""
    key = SigningKey.generate("test/n")
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(tmp_path / "spool.db", node_id="n")
    new = DirectoryWriter(tmp_path / "new")

    class Moving(DirectoryWriter):
        """The old bucket; the target moves as the batch's first file is written."""

        def put(self, key: str, data: bytes, **lock: Any) -> None:
            super().put(key, data, **lock)
            if "/integrity/" not in f"/{key}":
                exporter.retarget(new)

    exporter = Exporter(
        ExporterConfig(name="x"), spool, Moving(tmp_path / "old"), node_id="n", notary=notary
    )
    _emit(spool, 3, time.time_ns())
    _emit(spool, 2, time.time_ns(), log_type=event_pb2.LOG_TYPE_IAM)  # two files a batch
    assert exporter.export_once() == 5
    _emit(spool, 5, time.time_ns())
    assert exporter.export_once() == 5
    spool.close()
    for root, first, last in ((tmp_path / "old", 1, 5), (tmp_path / "new", 6, 10)):
        report = Verifier(LocalDirectory(root), [key.verifier]).run()
        assert report.findings == [], root
        assert (report.nodes[0].first_seq, report.nodes[0].last_seq) == (first, last)
