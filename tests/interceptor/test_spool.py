"""The durable spool: numbering, durability, backpressure, freeing."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from auditline.audit.v1 import event_pb2
from auditline.interceptor import AuditUnavailableError, Spool
from auditline.interceptor._formats import event_document
from auditline.interceptor._losses import Losses
from auditline.interceptor._spool_lock import SpoolLock
from auditline.interceptor._spool_records import ExportedFile
from auditline.interceptor._types import EventDocument
from tests.support.processes import wait_for


def _event(name: str = "Call", size: int = 0) -> event_pb2.ApiEvent:
    event = event_pb2.ApiEvent(event_name=name, version="2")
    event.request.request_time.FromNanoseconds(1_800_000_000_000_000_000)
    if size:
        event.request.request_params.update({"pad": "x" * size})
    return event


def _file(key: str, first: int, last: int) -> ExportedFile:
    return ExportedFile(
        key=key, first_seq=first, last_seq=last, events=last - first + 1, bytes=10, sha256="0" * 64
    )


def test_sequences_are_gap_free_and_survive_reopening(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", node_id="n1", durability="sync")
    for i in range(5):
        spool.emit(_event(f"E{i}"))
    spool.close()
    spool = Spool(tmp_path / "spool.db", node_id="n1", durability="sync")
    spool.emit(_event("E5"))
    events = [e.event() for e in spool.store.read(0)]
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e.event_name for e in events] == [f"E{i}" for i in range(6)]
    assert {e.node_id for e in events} == {"n1"}
    spool.close()


def test_async_events_are_on_disk_after_flush(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.emit(_event())
    assert spool.flush(10)
    assert len(spool.store.read(0)) == 1
    spool.close()


def test_freeing_waits_for_every_exporter(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", durability="sync")
    spool.store.register("a")
    spool.store.register("b")
    for _ in range(4):
        spool.emit(_event())
    spool.store.commit_files("a", [_file("k1", 1, 4)], watermark=4, since=0)
    assert len(spool.store.read(0)) == 4  # b has not passed them yet
    spool.store.commit_files("b", [_file("k2", 1, 2)], watermark=2, since=0)
    assert [e.seq for e in spool.store.read(0)] == [3, 4]
    spool.close()


def test_freeing_exported_events_does_not_write_them_again(tmp_path: Path) -> None:
    """Some SQLite builds zero every deleted row (`secure_delete`): freeing an
    exported batch would then write all its pages to the WAL again."""
    path = tmp_path / "spool.db"
    spool = Spool(path, durability="sync")
    spool.store.register("a")
    for _ in range(200):
        spool.emit(_event(size=4000))
    with contextlib.closing(sqlite3.connect(path)) as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = tmp_path / "spool.db-wal"
    assert wal.stat().st_size == 0
    spool.store.commit_files("a", [_file("k1", 1, 200)], watermark=200, since=0)
    assert spool.store.read(0) == []  # freed
    assert wal.stat().st_size < 200 * 4000 / 4
    spool.close()


def test_reject_refuses_calls_when_full(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", durability="sync", max_bytes=200, backpressure="reject")
    spool.admit()
    spool.emit(_event(size=300))
    with pytest.raises(AuditUnavailableError):
        spool.admit()
    assert spool.stats.rejected == 1
    spool.close()


def test_block_waits_for_room(tmp_path: Path) -> None:
    spool = Spool(
        tmp_path / "spool.db",
        durability="sync",
        max_bytes=200,
        backpressure="block",
        block_timeout=30,
    )
    spool.store.register("only")
    spool.emit(_event(size=300))
    admitted = threading.Event()

    def admit() -> None:
        spool.admit()
        admitted.set()

    waiter = threading.Thread(target=admit)
    waiter.start()
    assert not admitted.wait(0.2)  # still full: the caller waits
    spool.store.commit_files("only", [_file("k", 1, 1)], watermark=1, since=0)  # frees the room
    assert admitted.wait(10)
    waiter.join(10)
    spool.close()


def test_block_gives_up_after_its_timeout(tmp_path: Path) -> None:
    spool = Spool(
        tmp_path / "spool.db",
        durability="sync",
        max_bytes=200,
        backpressure="block",
        block_timeout=0.1,
    )
    spool.emit(_event(size=300))
    with pytest.raises(AuditUnavailableError):
        spool.admit()
    spool.close()


def test_drop_counts_and_leaves_a_marker(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_bytes=200, backpressure="drop")
    spool.store.register("only")
    spool.emit(_event("Kept", size=300))
    assert spool.flush(10)
    spool.admit()  # drop never refuses calls
    spool.emit(_event("Lost1"))
    spool.emit(_event("Lost2"))
    assert spool.stats.dropped == 2
    spool.store.commit_files("only", [_file("k", 1, 1)], watermark=1, since=0)
    spool.emit(_event("After"))
    assert spool.flush(10)
    names = [e.event().event_name for e in spool.store.read(0)]
    assert names == ["AuditEventsDropped", "After"]
    marker = spool.store.read(0)[0].event()
    assert marker.response.response_status == "DATA_LOSS"
    assert "2 audit events were dropped" in marker.response.response_error
    spool.close()


def test_a_second_writer_of_a_spool_waits_then_is_refused(tmp_path: Path) -> None:
    # Two writers would number their events alike (an audit worker left behind by a
    # killed server, and the next server's): the second waits for the first to let go.
    spool = Spool(tmp_path / "spool.db", node_id="n")
    with pytest.raises(RuntimeError, match="in use by another process"):
        SpoolLock(tmp_path / "spool.db.lock", timeout=0.2)
    spool.close()
    SpoolLock(tmp_path / "spool.db.lock", timeout=0.2).release()


def test_a_late_commit_never_moves_the_watermark_back(tmp_path: Path) -> None:
    # Two batches of one exporter name (a replaced exporter's last, its successor's
    # first): the one that commits second finds the watermark moved and changes nothing.
    from auditline.interceptor._spool_store import StaleBatchError

    spool = Spool(tmp_path / "spool.db", durability="sync")
    spool.store.register("a")
    for _ in range(6):
        spool.emit(_event())
    spool.store.begin_batch("a", 1, 3)
    spool.store.commit_files("a", [_file("new", 1, 6)], watermark=6, since=0)
    spool.store.begin_batch("a", 7, 9)  # the successor's next batch
    with pytest.raises(StaleBatchError):
        spool.store.commit_files("a", [_file("old", 1, 3)], watermark=3, since=0)
    assert spool.store.watermark("a") == 6
    assert [key for _, key in [(e, f.key) for e, f in spool.store.files("a")]] == ["new"]
    assert spool.store.intent("a") is not None  # the successor's, untouched
    spool.close()


def test_a_full_disk_never_splits_one_calls_events(tmp_path: Path) -> None:
    """A full disk makes the writer commit what fits; one call's events (an audit
    worker's fail-closed calls of a round come as one) are still kept all or none, so
    a caller refused UNAVAILABLE has none of its events in the log."""
    spool = Spool(
        tmp_path / "spool.db",
        durability="sync",
        backpressure="reject",
        max_file_bytes=512 * 1024,
        reserve_bytes=4096,
        block_timeout=1.0,
    )

    def document(name: str, size: int) -> EventDocument:
        return event_document(_event(name, size))

    for filled in range(1000):  # until the file is full
        try:
            spool.emit_documents([document(f"Fill{filled}", 20_000)], wait=True)
        except AuditUnavailableError:
            break
    assert spool.degraded
    spool.store.free()
    before = spool.store.last_seq
    call = [document(f"Call{k}", 3000) for k in range(8)]
    try:
        spool.emit_documents(call, wait=True)
        kept = 8
    except AuditUnavailableError:
        kept = 0
    names = [e.event().event_name for e in spool.store.read(before)]
    assert len(names) == kept, names
    spool.close()


def test_an_async_spool_syncs_its_events_before_they_are_exported(tmp_path: Path) -> None:
    """Async durability commits without syncing; the batch an exporter begins is
    committed synced (which syncs the events before it in the log): events uploaded
    and signed cannot be taken back by a power loss."""
    spool = Spool(tmp_path / "spool.db", durability="async")
    spool.emit(_event())
    assert spool.flush(10)
    statements: list[str] = []
    spool.store._db.set_trace_callback(statements.append)
    spool.store.begin_batch("a", 1, 1)
    spool.store._db.set_trace_callback(None)
    insert = next(i for i, s in enumerate(statements) if "INTO intents" in s)
    synced = [i for i, s in enumerate(statements) if s == "PRAGMA synchronous=FULL"]
    assert synced
    assert synced[0] < insert
    assert statements[-1] == "PRAGMA synchronous=NORMAL"
    assert spool.store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    spool.close()


def test_an_exporter_unregistered_leaves_no_batch_behind(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", durability="sync")
    spool.store.register("a")
    spool.emit(_event())
    spool.store.begin_batch("a", 1, 1)
    spool.store.unregister("a")
    assert spool.store.intent("a") is None
    spool.close()


_DROP_THEN_DIE = """
import json, os, signal, sqlite3, sys, time
from pathlib import Path
from auditline.audit.v1 import event_pb2
from auditline.interceptor import Spool

path = Path(sys.argv[1])
spool = Spool(path, node_id="n", backpressure="drop", max_bytes=64 * 1024)
spool.store.register("down")  # an exporter whose store is down: nothing is freed
for i in range(400):
    event = event_pb2.ApiEvent(event_name=f"Call{i}", version="2")
    event.request.request_params.update({"pad": "x" * 500})
    spool.emit(event)
    if i % 20 == 19:  # written, so that the spool sees itself at its cap
        assert spool.flush(10)
dropped = spool.stats.dropped
assert dropped > 0
saved = sqlite3.connect(path)
deadline = time.monotonic() + 10
def saved_count():
    row = saved.execute("SELECT body FROM losses").fetchone()
    return None if row is None else json.loads(row[0])["count"]
while saved_count() != dropped:
    assert time.monotonic() < deadline, "the losses were never saved"
    time.sleep(0.01)
print(dropped, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # before the marker: the spool is still at its cap
"""


def test_losses_counted_before_a_kill_9_reach_the_log(tmp_path: Path) -> None:
    """Events dropped at the cap are told of by a marker once there is room again;
    a process killed before that must leave the count behind for the next start."""
    path = tmp_path / "spool.db"
    child = subprocess.run(
        [sys.executable, "-c", _DROP_THEN_DIE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    dropped = int(child.stdout)
    spool = Spool(path, node_id="n", backpressure="drop", max_bytes=64 * 1024)
    assert spool.flush(10, with_drop_marker=True)
    markers = [
        e.document()["Request"]["RequestParams"]["dropped_events"]
        for e in spool.store.read(0, 100_000)
        if e.document()["EventName"] == "AuditEventsDropped"
    ]
    assert markers == [dropped]
    assert spool.store.saved_losses() is None  # told of: forgotten with the marker
    spool.close()


def _dropped_told(spool: Spool) -> list[int]:
    return [
        e.document()["Request"]["RequestParams"]["dropped_events"]
        for e in spool.store.read(0, 100_000)
        if e.document()["EventName"] == "AuditEventsDropped"
    ]


def test_a_loss_report_is_counted_once_whether_saved_or_told_of(tmp_path: Path) -> None:
    """An audit worker's serving process numbers its reports of lost events and sends
    one again until the spool has kept it: the spool counts each number once, across
    its markers and its reopening. (Markers only when flushed or closed: no writer
    round between two counts splits them.)"""
    path = tmp_path / "spool.db"
    spool = Spool(path, node_id="n", commit_interval=3600)
    spool.count_lost(3, "behind", 1, report=1)
    spool.count_lost(3, "behind", 1, report=1)  # sent again: not counted
    assert spool.flush(10, with_drop_marker=True)
    assert spool.loss_reports_kept == 1
    spool.count_lost(4, "behind", 2, report=2)
    spool.close()  # closing writes its marker
    spool = Spool(path, node_id="n", commit_interval=3600)
    assert spool.loss_reports_kept == 2
    for report in (1, 2):
        spool.count_lost(9, "behind", 3, report=report)  # a worker started again
    spool.count_lost(5, "behind", 4, report=3)
    spool.count_lost(6, "past the cap", 5)  # the spool's own losses are not numbered
    assert spool.flush(10, with_drop_marker=True)
    assert _dropped_told(spool) == [3, 4, 11]
    # Saved with a count that waits for its marker (a spool at its cap), then reopened.
    spool.store.save_losses(Losses(count=2, first_ns=6, last_ns=6, reasons={"x": 2}, reports=4))
    spool.close()
    spool = Spool(path, node_id="n", commit_interval=3600)
    assert spool.loss_reports_kept == 4
    spool.count_lost(2, "behind", 7, report=4)
    assert spool.flush(10, with_drop_marker=True)
    assert _dropped_told(spool) == [3, 4, 11, 2]
    spool.close()


def test_a_spool_at_its_cap_keeps_a_loss_reports_count_and_number_together(
    tmp_path: Path,
) -> None:
    """At its cap a spool saves the count of losses rather than write their marker:
    the count and its report's number are saved together or not at all (a full disk
    between the two would leave the number kept and its count lost)."""
    path = tmp_path / "spool.db"
    spool = Spool(path, node_id="n", max_bytes=1)
    spool.emit(_event())  # not exported: the spool is at its cap from here
    assert spool.flush(10)
    spool.count_lost(5, "behind", 1, report=1)
    wait_for(lambda: spool.loss_reports_kept == 1 or None, timeout=10, what="the count saved")
    assert _dropped_told(spool) == []  # saved, not told: no room for a marker
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON losses BEGIN SELECT RAISE(ABORT, 'full'); END"
        )
        db.commit()
    with pytest.raises(sqlite3.Error):
        spool.store.save_losses(
            Losses(count=12, first_ns=1, last_ns=2, reasons={"behind": 12}, reports=2)
        )
    saved = spool.store.saved_losses()
    assert saved is not None
    assert (saved.count, saved.reports) == (5, 1)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("DROP TRIGGER full")
        db.commit()
    spool.close()


def test_a_flush_wakes_the_writer_in_async_durability(tmp_path: Path) -> None:
    """A flush has what was taken committed now, not at the next commit interval (a
    pipeline's close, or an audit worker answering, waited for it: up to its timeout
    with a long interval)."""
    spool = Spool(tmp_path / "spool.db", node_id="n", commit_interval=3600)
    try:
        spool.emit(_event())
        assert spool.flush(10)
        assert spool.stats.last_seq == 1
    finally:
        spool.close()
