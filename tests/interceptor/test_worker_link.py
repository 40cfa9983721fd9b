"""The two ends of the audit worker's pipe (`WorkerLink`, the worker's `take`), without a
process."""

from __future__ import annotations

import functools
import gzip
import multiprocessing
import threading
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from auditline.audit.v1 import event_pb2
from auditline.interceptor import (
    AuditWorker,
    DirectoryWriter,
    ExporterConfig,
    Pipeline,
    Spool,
    _worker_process,
)
from auditline.interceptor._builder import EventBuilder
from auditline.interceptor._capture_codec import pack, unpack
from auditline.interceptor._formats import event_document
from auditline.interceptor._record import AuditConfig
from auditline.interceptor._spool_freeing import SpoolFreeing
from auditline.interceptor._types import EventDocument
from auditline.interceptor._worker_holds import DeletionHolds
from auditline.interceptor._worker_link import LinkHooks, Supervision, WorkerLink
from auditline.interceptor._worker_outbox import Batch
from auditline.interceptor._worker_process import (
    _Worker,
    start_worker,
    worker_main,
)
from tests.support.processes import wait_for
from tests.support.worker_pipelines import slow_commits, spool_only


class _Pipe:
    """Records what is written to the worker."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def send_bytes(self, data: bytes) -> None:
        self.messages.append(unpack(data))


def test_a_batch_that_cannot_be_encoded_still_sends_what_is_not_an_event() -> None:
    """Its events are not sent (the worker is told to count those no caller waits for,
    and refuse the others); its proto files, notices and loss reports go on in their
    turn (a later loss report counted first would make the worker skip this one)."""
    unencodable: list[Batch] = []
    hooks = LinkHooks(
        answered=lambda ids, error, state: None,
        follow=lambda state: None,
        died=lambda: None,
        resend=list,
        oldest_sent_at=lambda: None,
        schema_files=list,
        closing=lambda: False,
        given_up=lambda reason: None,
        unencodable=unencodable.append,
    )
    supervision = Supervision(max_restarts=0, restart_window=1, start_timeout=1, ack_timeout=1)
    link = WorkerLink(lambda: None, supervision, hooks)  # type: ignore[arg-type,return-value]
    pipe = _Pipe()
    link._conn = pipe  # type: ignore[assignment]
    schemas = ("schemas", [b"proto file"])
    notice = ("notice", "settings", (True, "bucket"), 1)
    report = ("lost", 3, "the audit worker was behind", 1, 7)
    bug = ("capture", object(), False)  # a bug's value: marshal refuses it
    batch = Batch(batch_id=4, items=[schemas, bug, notice, report], events=1, waited=False)
    link.send(batch, register=lambda: None)
    assert unencodable == [batch]
    assert pipe.messages == [("batch", 4, False, [schemas, notice, report])]
    # A notice whose value is the bug: the loss report goes at least.
    bad = Batch(batch_id=5, items=[("notice", "x", object(), 1), report], events=0, waited=False)
    link.send(bad, register=lambda: None)
    assert pipe.messages[-1] == ("batch", 5, False, [report])


def test_the_async_events_of_a_batch_that_cannot_be_encoded_are_counted_as_lost(
    tmp_path: Path,
) -> None:
    worker = AuditWorker(functools.partial(spool_only, str(tmp_path)))  # not started
    with worker._cond:
        worker._outbox.pending += [("capture", b"", False), ("capture", b"", True)]
        assert worker._held.take(2, wait=False) == 2
        batch = worker._outbox.take([])
        worker._outbox.sent(batch)
        answer = worker._answers._answer(batch.batch_id)
        answer.waiters += 1  # as a caller waiting for it
    worker._link_hooks().unencodable(batch)
    assert worker.lost == 1  # the one no caller waited for; its caller is refused
    assert answer.error == "the audit event could not be encoded"
    with worker._cond:
        assert worker._held.count == 0
        [report] = worker._held.report()
    assert report[1:3] == (1, "their batch could not be encoded for the audit worker")


def _document(text: str) -> dict[str, Any]:
    event = event_pb2.ApiEvent(event_name="Echo", version="2", event_id=uuid.uuid4().hex)
    event.request.request_params.update({"text": text})
    return event_document(event).document


def test_a_round_with_fail_closed_and_async_events_is_answerable_at_once(
    tmp_path: Path,
) -> None:
    """The worker commits a round's async events with its fail-closed calls' events:
    when those are committed the round may be answered, with no wait for another
    commit (the fail-closed calls' answer waited for the next one, ~10 ms)."""
    spool = Spool(tmp_path / "spool.db", node_id="n", durability="sync", commit_interval=3600)
    worker = _Worker(spool, EventBuilder(AuditConfig()), None)
    items = [
        ("document", _document("async"), 1, 2, False),
        ("document", _document("fail-closed"), 1, 2, True),
    ]
    try:
        error, queued = worker.take([(1, False, items)])
        assert error == ""
        assert queued.committed()
    finally:
        spool.close()


def test_a_round_taken_just_before_the_quit_is_answered(tmp_path: Path) -> None:
    """Async events that came after the last flush are committed by the worker's close,
    and answered before it says it quits (else their calls' batch goes unanswered)."""
    (tmp_path / "slow").touch()  # its spool commits only at close
    started = start_worker(
        functools.partial(slow_commits, str(tmp_path)), AuditConfig(), [], timeout=60
    )
    items = [("document", _document("late"), 1, 2, False)]
    started.conn.send_bytes(pack(("batch", 1, False, items)))
    started.conn.send_bytes(pack(("quit",)))
    kinds: list[str] = []
    while not kinds or kinds[-1] != "quit":
        assert started.conn.poll(30), f"no reply after {kinds}"
        reply = unpack(started.conn.recv_bytes())
        if reply[0] != "state":
            kinds.append(reply[0])
            assert reply[0] != "ack" or list(reply[1]) == [1]
    started.process.join(30)
    assert kinds == ["ack", "quit"]


class _ThreadWorker:
    """`worker_main` run in a thread of the test (as the worker process runs it), and
    the serving process's end of its pipe."""

    def __init__(
        self, monkeypatch: Any, pipeline: Callable[[], Pipeline], *, again: bool = False
    ) -> None:
        # A thread may not set a signal handler; what the worker sets for its process
        # is put back after the test.
        quiet = types.SimpleNamespace(signal=lambda *args: None, SIGINT=0, SIG_IGN=0)
        monkeypatch.setattr(_worker_process, "signal", quiet)
        monkeypatch.setattr(SpoolFreeing, "hold_at_open", False)
        self.conn, self._theirs = multiprocessing.Pipe()
        args: tuple[Any, ...] = (self._theirs, pipeline, AuditConfig(), [], again)
        self._thread = threading.Thread(target=worker_main, args=args)
        self._thread.start()

    def send(self, batch_id: int, items: list[tuple[Any, ...]], *, resent: bool = False) -> None:
        self.conn.send_bytes(pack(("batch", batch_id, resent, items)))

    def reply(self) -> Any:
        """The next reply but the spool's state reports."""
        while True:
            assert self.conn.poll(30), "the worker did not answer"
            message = unpack(self.conn.recv_bytes())
            if message[0] != "state":
                return message

    def quit(self) -> None:
        self.conn.send_bytes(pack(("quit",)))
        self._thread.join(30)
        self.conn.close()
        self._theirs.close()
        assert not self._thread.is_alive()


def test_a_round_of_async_events_is_answered_when_the_spool_commits_it(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The spool's writer wakes the worker's loop after each write while a round waits:
    the round is answered then (here an hour before it would be answered uncommitted),
    with no look at the spool every few ms."""
    monkeypatch.setattr(_worker_process, "ACK_AT_THE_LATEST", 3600.0)
    spools: list[Spool] = []

    def pipeline() -> Pipeline:
        spool = Spool(tmp_path / "spool.db", node_id="n", durability="async", commit_interval=3600)
        spools.append(spool)
        return Pipeline(spool)

    worker = _ThreadWorker(monkeypatch, pipeline)
    try:
        assert worker.reply()[0] == "ready"
        worker.send(1, [("document", _document("async"), 1, 2, False)])
        # Queued, not committed (the commit interval is an hour).
        wait_for(lambda: spools[0].stats.buffered_bytes or None, timeout=30, what="it queued")
        assert not worker.conn.poll(0)  # not answered while uncommitted
        assert spools[0].flush(30)
        assert worker.reply()[:3] == ("ack", (1,), "")
    finally:
        worker.quit()


@pytest.mark.parametrize("cap", [False, True], ids=["kept", "deleted-by-the-cap"])
def test_a_worker_started_again_deletes_nothing_before_it_took_the_resent_batches(
    tmp_path: Path, monkeypatch: Any, cap: bool
) -> None:
    """What the dead worker committed but did not acknowledge is resent, and recognised
    by its ids while the spool keeps it. With no retention window its exporter would
    delete it once exported, and the resent events would be written twice: the spool
    keeps everything until the serving process says every resent batch was sent, and
    then what the rounds found of them until they are answered. Here the resent batch
    comes with a new one and the end of the resend, as after a restart under load.
    The spool's cap deletes held events all the same (it bounds the disk), and then
    their ids are remembered while the hold lasts."""
    committed = [_document(f"committed {i}") for i in range(3)]
    dead = Spool(tmp_path / "spool.db", node_id="n")  # the dead worker's commits
    dead.emit_documents(
        [EventDocument(document=dict(d), at_ns=1, end_ns=2) for d in committed], wait=True
    )
    dead.close()
    pipelines: list[Pipeline] = []

    def pipeline() -> Pipeline:
        made = Pipeline(Spool(tmp_path / "spool.db", node_id="n"))
        made.add_exporter(
            ExporterConfig(name="e", flush_interval=0.05), DirectoryWriter(tmp_path / "out")
        )
        pipelines.append(made)
        return made

    worker = _ThreadWorker(monkeypatch, pipeline, again=True)
    try:
        assert worker.reply()[0] == "ready"
        store = pipelines[0].spool.store
        wait_for(lambda: store.watermark("e") == 3 or None, timeout=30, what="their export")
        assert [e.seq for e in store.read(0, 10)] == [1, 2, 3]  # kept for the resend
        if cap:
            assert store.trim_retained(0) > 0
            assert store.read(0, 10) == []
        worker.send(1, [("document", d, 1, 2, False) for d in committed], resent=True)
        worker.send(2, [("document", _document("new"), 1, 2, False)])
        worker.conn.send_bytes(pack(("resent",)))
        acknowledged: list[int] = []
        while len(acknowledged) < 2:
            reply = worker.reply()
            assert reply[0] == "ack"
            assert reply[2] == ""
            acknowledged += reply[1]
        assert store.last_seq == 4  # recognised, not written again
        wait_for(lambda: not store.read(0, 10) or None, timeout=30, what="their deletion")
    finally:
        worker.quit()
    lines = [
        line
        for path in (tmp_path / "out").rglob("*.jsonl.gz")
        for line in gzip.decompress(path.read_bytes()).splitlines()
    ]
    assert len(lines) == 4  # each once


def test_the_worker_holds_the_events_of_the_rounds_it_has_not_answered() -> None:
    """From the oldest round not answered; in a worker started again, nothing at all
    until the serving process says every resent batch was sent."""
    held: list[int | None] = []
    store: Any = types.SimpleNamespace(hold=held.append)
    holds = DeletionHolds(store, held_at_open=None)
    holds.taking(10)
    holds.settled([10], resent_all=False)
    holds.taking(12)  # the first holds more
    holds.settled([10, 12], resent_all=False)
    holds.settled([12], resent_all=False)
    holds.settled([], resent_all=False)
    # A round that found events of the dead worker's (numbered before it) holds them.
    holds.taking(20)
    holds.settled([20, 4], resent_all=False)
    assert held == [10, 12, None, 20, 4]

    held.clear()
    again = DeletionHolds(store, held_at_open=0)
    again.taking(5)
    again.settled([5], resent_all=False)
    again.settled([], resent_all=False)
    again.settled([], resent_all=True)  # the serving process said so
    assert held == [0, 0, None]

    # The end of the resend comes with the round that found the dead worker's events
    # (numbered 4 and after): the hold never moves past them before it is answered.
    # (Lifted before the round's hold was known, it moved up to 9 and deleted them.)
    held.clear()
    again = DeletionHolds(store, held_at_open=0)
    again.taking(9)
    again.settled([3], resent_all=True)
    assert held == [0, 0, 3]
