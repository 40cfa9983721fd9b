"""Exported events kept for queries (`retain_seconds`, `auditline serve`'s
`--events-retention-days`): they leave the window oldest first, and an exporter's
commit and a trim under the spool's cap read only the rows they free, however many
are retained."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from auditline.audit.v1 import event_pb2
from auditline.interceptor import DirectoryWriter, Exporter, ExporterConfig, Spool, _spool_freeing

DAY_NS = 86_400 * 10**9


def _emit(spool: Spool, *started_ns: int) -> None:
    for i, at_ns in enumerate(started_ns):
        event = event_pb2.ApiEvent(event_name=f"Call{i}", event_id=f"e{at_ns}-{i}", version="2")
        event.request.request_time.FromNanoseconds(at_ns)
        event.response.response_time.FromNanoseconds(at_ns)
        spool.emit(event)
    assert spool.flush(10)


def _export_all(exporter: Exporter) -> None:
    while exporter.export_once():
        pass


def test_exported_events_leave_the_window_oldest_first(tmp_path: Path) -> None:
    now = time.time_ns()
    old, recent = now - 2 * DAY_NS, now - DAY_NS // 2
    spool = Spool(tmp_path / "spool.db", node_id="n", retain_seconds=86_400)
    exporter = Exporter(
        ExporterConfig(name="a"), spool, DirectoryWriter(tmp_path / "out"), node_id="n"
    )
    # The fifth began before the fourth (a long call) but was numbered after it.
    _emit(spool, old, old, old, recent, old, recent)
    assert [e.seq for e in spool.store.read(0, 100)] == [1, 2, 3, 4, 5, 6]  # not exported
    _export_all(exporter)
    kept = spool.store.read(0, 100)
    assert [e.seq for e in kept] == [4, 5, 6]
    assert spool.store.retained_bytes == sum(len(e.body) for e in kept)
    assert spool.store.pending_bytes == 0
    spool.close()


def test_an_event_dated_ahead_holds_no_later_event_in_the_window(tmp_path: Path) -> None:
    """One recorded while the node's clock ran a day ahead (stepped back since): it is
    not taken as still in the window, and the events numbered after it leave when
    theirs is over, not a day later."""
    now = time.time_ns()
    ahead, old, recent = now + DAY_NS, now - 2 * DAY_NS, now - DAY_NS // 2
    spool = Spool(tmp_path / "spool.db", node_id="n", retain_seconds=86_400)
    exporter = Exporter(
        ExporterConfig(name="a"), spool, DirectoryWriter(tmp_path / "out"), node_id="n"
    )
    _emit(spool, old, ahead, old, recent)
    _export_all(exporter)
    kept = spool.store.read(0, 100)
    assert [e.seq for e in kept] == [4]
    assert spool.store.retained_bytes == len(kept[0].body)
    spool.close()


def test_held_events_are_exported_but_not_deleted_until_the_hold_moves(
    tmp_path: Path,
) -> None:
    """An audit worker holds the events of the batches it has not acknowledged: with no
    retention window they are exported, and deleted only once the hold is lifted (a
    worker started again recognises resent events by their ids while they are kept);
    the cap still deletes them, and remembers their ids while they are held."""
    now = time.time_ns()
    spool = Spool(tmp_path / "spool.db", node_id="n")
    exporter = Exporter(
        ExporterConfig(name="a"), spool, DirectoryWriter(tmp_path / "out"), node_id="n"
    )
    _emit(spool, now, now, now, now)
    spool.store.hold(2)
    _export_all(exporter)
    kept = spool.store.read(0, 100)
    assert [e.seq for e in kept] == [3, 4]
    assert spool.store.retained_bytes == sum(len(e.body) for e in kept)
    spool.store.hold(None)  # what it kept back goes at once, not at the next export
    assert spool.store.read(0, 100) == []
    assert spool.store.retained_bytes == 0
    _emit(spool, now, now)
    spool.store.hold(4)
    _export_all(exporter)
    held = spool.store.read(0, 100)
    assert [e.seq for e in held] == [5, 6]
    ids = [
        spool.store._db.execute("SELECT event_id FROM events WHERE seq = ?", (e.seq,)).fetchone()[0]
        for e in held
    ]
    assert spool.store.trim_retained(0) > 0  # the cap: the hold gives way
    assert spool.store.read(0, 100) == []
    # ... but the held events' ids are remembered while it lasts, for a resend.
    assert [spool.store.seq_kept(i) for i in ids] == [5, 6]
    spool.store.hold(5)
    assert [spool.store.seq_kept(i) for i in ids] == [None, 6]
    spool.store.hold(None)
    assert [spool.store.seq_kept(i) for i in ids] == [None, None]
    spool.close()


def test_the_cap_remembers_the_newest_held_ids_only(tmp_path: Path, monkeypatch: Any) -> None:
    """Resent events are the newest: past its bound the spool forgets the oldest ids."""
    monkeypatch.setattr(_spool_freeing, "_TRIMMED_HELD_MOST", 2)
    now = time.time_ns()
    spool = Spool(tmp_path / "spool.db", node_id="n")
    exporter = Exporter(
        ExporterConfig(name="a"), spool, DirectoryWriter(tmp_path / "out"), node_id="n"
    )
    _emit(spool, now, now, now)
    spool.store.hold(0)
    _export_all(exporter)
    ids = [row[0] for row in spool.store._db.execute("SELECT event_id FROM events ORDER BY seq")]
    assert spool.store.trim_retained(0) > 0
    assert [spool.store.seq_kept(i) for i in ids] == [None, 2, 3]
    _emit(spool, now + 1)  # a later trim: the oldest remembered make way
    _export_all(exporter)
    ids += [row[0] for row in spool.store._db.execute("SELECT event_id FROM events")]
    assert spool.store.trim_retained(0) > 0
    assert [spool.store.seq_kept(i) for i in ids] == [None, None, 3, 4]
    spool.close()


def _rows_read_by_a_commit(tmp_path: Path, retained: int) -> int:
    """SQLite virtual-machine steps (in hundreds) of one exporter batch of 20 events,
    with `retained` exported events kept in the window."""
    spool = Spool(tmp_path / f"spool-{retained}.db", node_id="n", retain_seconds=7 * 86_400)
    exporter = Exporter(
        ExporterConfig(name="a"), spool, DirectoryWriter(tmp_path / f"out-{retained}"), node_id="n"
    )
    now = time.time_ns()
    _emit(spool, *[now - DAY_NS] * retained)
    _export_all(exporter)
    _emit(spool, *[now] * 20)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    spool.store._db.set_progress_handler(count, 100)
    try:
        assert exporter.export_once() == 20
    finally:
        spool.store._db.set_progress_handler(None, 0)
    spool.close()
    return steps[0]


def test_a_commit_reads_no_more_with_more_events_retained(tmp_path: Path) -> None:
    """A condition on the events' time, or on the tree's nodes by an expression, reads
    every retained row at each file: the exporter's rate then fell as the window
    filled (88,000 events/s with none retained, 12,000 with 300,000)."""
    few = _rows_read_by_a_commit(tmp_path, 100)
    many = _rows_read_by_a_commit(tmp_path, 3_000)
    assert many <= few * 1.2 + 10, (few, many)


def _steps_to_trim_one_event(tmp_path: Path, retained: int) -> int:
    """SQLite virtual-machine steps (in hundreds) to make room for one event under the
    spool's cap, with `retained` exported events kept in the window."""
    spool = Spool(tmp_path / f"trim-{retained}.db", node_id="n", retain_seconds=7 * 86_400)
    exporter = Exporter(
        ExporterConfig(name="a"), spool, DirectoryWriter(tmp_path / f"trim-{retained}"), node_id="n"
    )
    _emit(spool, *[time.time_ns()] * retained)
    _export_all(exporter)
    store = spool.store
    kept = store.pending_bytes + store.retained_bytes
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    store._db.set_progress_handler(count, 100)
    try:
        assert store.trim_retained(kept - 1) > 0  # the oldest event goes
    finally:
        store._db.set_progress_handler(None, 0)
    assert [e.seq for e in store.read(0, 1)] == [2]
    spool.close()
    return steps[0]


def test_making_room_under_the_cap_reads_no_more_with_more_events_retained(
    tmp_path: Path,
) -> None:
    """A spool kept at its cap trims at every writer round: a running sum over the
    retained events in SQL read and sorted them all each time (104 ms a round with
    100,000 retained)."""
    few = _steps_to_trim_one_event(tmp_path, 100)
    many = _steps_to_trim_one_event(tmp_path, 3_000)
    assert many <= few * 1.2 + 10, (few, many)
