"""The audit worker: captures built, spooled and exported in a process of their own, the
same events as in-process building, and a worker killed under load loses nothing
acknowledged."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from auditline_testing.v1 import echo_pb2

from auditline.audit.v1 import event_pb2
from auditline.interceptor import (
    AuditUnavailableError,
    AuditWorker,
    LocalDirectory,
    MemorySink,
    Spool,
    read_exported,
)
from auditline.interceptor._formats import apievent_dict, event_document
from auditline.interceptor._record import AuditConfig
from auditline.interceptor._types import EventDocument
from auditline.interceptor._worker_process import _Worker
from tests.interceptor.harness import FLAVOURS, Harness
from tests.support.outcome import code_of, error_of
from tests.support.processes import wait_for
from tests.support.worker_pipelines import (
    FACTORY_SECRET,
    dies_once,
    dropped_in_spool,
    fails_when_started_again,
    full_disk_pipeline,
    notice_fails,
    slow_commits,
    spool_and_directory,
    spool_in_use,
    spool_only,
    spooled_documents,
)

SECRET = "worker-secret-" + uuid.uuid4().hex


def _worker(root: Path, flush_interval: float = 0.2, **options: Any) -> AuditWorker:
    pipeline = functools.partial(spool_and_directory, str(root), "sync", flush_interval)
    return AuditWorker(pipeline, **options)


def _exported(root: Path) -> list[dict[str, Any]]:
    return [event.document for event in read_exported(LocalDirectory(root / "objects"))]


def _calls(harness: Harness) -> None:
    """Calls of several shapes and outcomes, with secrets to redact."""
    credentials = echo_pb2.Credentials(user="u", password=SECRET, api_key=SECRET)
    harness.stub.Echo(echo_pb2.EchoRequest(text="hello", credentials=credentials))
    harness.stub.CreateThing(echo_pb2.EchoRequest(text="made", tokens=[SECRET]))
    list(harness.stub.ListThings(echo_pb2.EchoRequest(text="items", count=3)))
    harness.stub.UploadThings(iter([echo_pb2.EchoRequest(text="a"), echo_pb2.EchoRequest()]))
    with pytest.raises(grpc.RpcError):
        harness.stub.Echo(echo_pb2.EchoRequest(action="abort", text="no"))
    with pytest.raises(grpc.RpcError):
        harness.stub.Echo(echo_pb2.EchoRequest(action="raise", text="boom"))


# What differs between two runs of the same calls.
_VARYING = {
    ("Request", "RequestTime"),
    ("Request", "SourcePort"),
    ("Response", "ResponseTime"),
    ("EventId",),
    ("Sequence",),
    ("NodeId",),
}


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in document.items() if (k,) not in _VARYING}
    for part in ("Request", "Response"):
        out[part] = {k: v for k, v in document[part].items() if (part, k) not in _VARYING}
    return out


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_worker_builds_the_same_events_as_the_serving_process(
    flavour: str, tmp_path: Path
) -> None:
    local = Harness(flavour, sink=MemorySink())
    try:
        _calls(local)
        built_here = [_comparable(apievent_dict(e)) for e in local.events(6)]
    finally:
        local.close()

    worker = _worker(tmp_path)
    remote = Harness(flavour, sink=worker, fail_closed=True)
    try:
        _calls(remote)
    finally:
        remote.close()
        worker.close()
    built_there = [_comparable(d) for d in _exported(tmp_path)]
    key = lambda d: (d["Method"], d["Response"]["ResponseStatus"])  # noqa: E731
    assert sorted(built_there, key=key) == sorted(built_here, key=key)
    # Equal to the serving process's events, so the test service's proto files reached
    # the worker and its fields' redaction options held there; no secret is anywhere
    # on the worker's disk.
    assert SECRET not in repr(built_there)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


# Fail-closed, a sync server's calls block a thread for the worker's answer; an
# asyncio server's await it on the event loop (`AuditWorker.keep_captures`).
WAITING = ("sync", "aio")


def _fault_under_load(
    worker: AuditWorker,
    call: Callable[[str], None],
    answered: list[str],
    fault: signal.Signals,
    *,
    threads: int = 6,
    before: int = 100,
) -> int:
    """Calls `call(text)` from `threads` threads; once `before` are `answered`, sends
    the worker `fault`, waits for its restart and 100 answered calls more, and stops
    the calls. The pid of the worker it struck."""
    stop = threading.Event()

    def load(thread: int) -> None:
        i = 0
        while not stop.is_set():
            call(f"t{thread}-{i}")
            i += 1

    running = [threading.Thread(target=load, args=(n,)) for n in range(threads)]
    try:
        for thread in running:
            thread.start()
        wait_for(lambda: len(answered) > before or None, timeout=30, what="calls before it")
        pid = worker.pid
        assert pid is not None
        os.kill(pid, fault)
        wait_for(lambda: worker.restarts == 1 or None, timeout=60, what="the worker's restart")
        served = len(answered)
        wait_for(lambda: len(answered) > served + 100 or None, timeout=60, what="calls after it")
    finally:
        stop.set()
        for thread in running:
            thread.join()
    return pid


@pytest.mark.parametrize("flavour", WAITING)
@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_a_worker_killed_or_hung_under_load_loses_no_acknowledged_call(
    tmp_path: Path, fault: str, flavour: str
) -> None:
    # A hung worker (stopped: alive, silent) is taken for dead after `ack_timeout`.
    worker = _worker(tmp_path, ack_timeout=1.0)
    harness = Harness(flavour, sink=worker, fail_closed=True)
    answered: list[str] = []
    refused: list[str] = []
    codes: Counter[grpc.StatusCode] = Counter()

    def call(text: str) -> None:
        request = echo_pb2.EchoRequest(text=text)
        code = code_of(lambda: harness.stub.Echo(request, timeout=30))
        (answered if code == grpc.StatusCode.OK else refused).append(text)
        codes[code] += 1

    try:
        first_pid = _fault_under_load(
            worker, call, answered, signal.SIGKILL if fault == "killed" else signal.SIGSTOP
        )
    finally:
        harness.close()
        worker.close()
    assert worker.pid != first_pid
    # Fail-closed: a call whose event could not be kept is refused, never answered.
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    events = Counter(
        d["Request"]["RequestParams"].get("text")
        for d in _exported(tmp_path)
        if d["Method"] == "Echo" and d["Response"]["ResponseStatus"] == "OK"
    )
    missing = [text for text in answered if events[text] != 1]
    assert not missing, f"{len(missing)} of {len(answered)} answered calls: {missing[:5]}"
    assert not set(refused) & {t for t, n in events.items() if n}  # refused: not OK


def test_a_worker_killed_under_async_load_loses_no_answered_calls_event(
    tmp_path: Path,
) -> None:
    """Async too: the worker acknowledges a round of batches once its events are
    committed in its spool (within its 10 ms commit interval), and the serving process
    sends what was not acknowledged to the next worker. (Until 2026-12-07 it answered
    once they were queued: the calls answered 0-16 ms before the kill lost their
    events, uncounted.)"""
    worker = AuditWorker(functools.partial(spool_only, str(tmp_path), "async"))
    harness = Harness("sync", sink=worker)
    answered: list[str] = []

    def call(text: str) -> None:
        harness.stub.Echo(echo_pb2.EchoRequest(text=text), timeout=30)
        answered.append(text)

    try:
        _fault_under_load(worker, call, answered, signal.SIGKILL, threads=4, before=300)
        assert harness.interceptor.flush(10)
    finally:
        harness.close()
        worker.close()
    kept = Counter(d["Request"]["RequestParams"].get("text") for d in spooled_documents(tmp_path))
    missing = [text for text in answered if kept[text] != 1]
    assert not missing, f"{len(missing)} of {len(answered)} answered calls: {missing[:5]}"
    assert not worker.lost


def test_why_a_worker_could_not_start_again_is_not_told_in_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its pipeline factory's error names its type in the log, and the calls refused
    from then on are told only that it could not start: an error's message may quote
    a credential (it was every client's status)."""
    worker = AuditWorker(functools.partial(fails_when_started_again, str(tmp_path)))
    harness = Harness("sync", sink=worker, fail_closed=True)
    try:
        harness.stub.Echo(echo_pb2.EchoRequest(text="before"))
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        refused: list[str] = []

        def refusal() -> bool | None:
            error = error_of(lambda: harness.stub.Echo(echo_pb2.EchoRequest(text="after")))
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                refused.append(error.details() or "")
                return True
            return None

        wait_for(refusal, timeout=30, what="calls refused once the worker cannot start")
    finally:
        harness.close()
        worker.close()
    assert refused == ["the audit worker could not be started again"]
    assert "could not start: ConnectionError" in caplog.text
    assert FACTORY_SECRET not in caplog.text


def test_a_spool_another_process_holds_is_said_so(tmp_path: Path) -> None:
    """A second server on one data directory waited for the worker's start as long as
    the spool waits for its lock, and said only that the worker did not start in
    time (found by a helper): the spool's reason comes through whole."""
    worker = AuditWorker(functools.partial(spool_in_use, str(tmp_path)))
    try:
        with pytest.raises(RuntimeError, match=r"SpoolInUseError: the audit spool .* is in use"):
            Harness("sync", sink=worker)  # the interceptor starts its worker
    finally:
        worker.close()


@pytest.mark.parametrize("flavour", WAITING)
def test_a_worker_given_up_refuses_calls(tmp_path: Path, flavour: str) -> None:
    worker = _worker(tmp_path, max_restarts=0)
    harness = Harness(flavour, sink=worker, fail_closed=True)
    try:
        harness.stub.Echo(echo_pb2.EchoRequest(text="before"))
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)

        def refused() -> bool | None:
            after = echo_pb2.EchoRequest(text="after")
            code = code_of(lambda: harness.stub.Echo(after, timeout=30))
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE)
            return True if code == grpc.StatusCode.UNAVAILABLE else None

        wait_for(refused, timeout=30, what="calls refused once the worker is given up")
    finally:
        harness.close()
        worker.close()


@contextlib.contextmanager
def _thirty_lost(worker: AuditWorker, harness: Harness, *, first: bool = True) -> Iterator[None]:
    """After a call the worker committed (if `first`), the worker stopped and 50 calls
    made: 20 are held for it (`max_held`), 30 lost. It goes on when the block ends."""
    if first:
        harness.stub.Echo(echo_pb2.EchoRequest(text="first"))
        assert harness.interceptor.flush(10)
        assert worker.flush(10)
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGSTOP)  # alive and silent: nothing is acknowledged
    try:
        for i in range(50):
            harness.stub.Echo(echo_pb2.EchoRequest(text=f"while-stopped-{i}"))
        assert harness.interceptor.flush(10)
        wait_for(lambda: worker.lost == 30 or None, timeout=30, what="30 events lost")
        yield
    finally:
        os.kill(worker.pid, signal.SIGCONT)


def test_past_max_held_async_events_are_counted_in_the_log_not_kept_in_memory(
    tmp_path: Path,
) -> None:
    worker = _worker(tmp_path, max_held=20, ack_timeout=600)
    harness = Harness("sync", sink=worker)
    try:
        with _thirty_lost(worker, harness):
            pass
        assert worker.flush(30)  # caught up: room again
        harness.stub.Echo(echo_pb2.EchoRequest(text="last"))
    finally:
        harness.close()
        worker.close()
    exported = _exported(tmp_path)
    calls = [d for d in exported if d["EventName"] != "AuditEventsDropped"]
    markers = [d for d in exported if d["EventName"] == "AuditEventsDropped"]
    assert len(calls) == 52 - 30
    assert sum(m["Request"]["RequestParams"]["dropped_events"] for m in markers) == 30
    assert worker.restarts == 0


def _sent(worker: AuditWorker, notice: str) -> bool | None:
    """Whether a batch with this notice is sent and not yet answered."""
    with worker._cond:
        batches = worker._outbox.unacknowledged()
    items = [item for batch in batches for item in batch.items]
    return True if ("notice", notice) in [item[:2] for item in items] else None


def _all_acknowledged(worker: AuditWorker) -> bool | None:
    with worker._cond:
        outbox = worker._outbox
        return True if not outbox.pending and not outbox.unacknowledged() else None


def test_a_loss_report_acknowledged_and_not_yet_kept_is_counted_by_the_next_worker(
    tmp_path: Path,
) -> None:
    """The worker acknowledges the serving process's report of 30 lost events, and is
    killed before its spool kept the count: the next worker is sent the report again."""
    (tmp_path / "slow").touch()
    worker = AuditWorker(functools.partial(slow_commits, str(tmp_path)), max_held=20)
    harness = Harness("sync", sink=worker)
    try:
        with _thirty_lost(worker, harness, first=False):  # its spool commits only at close
            pass
        wait_for(lambda: _all_acknowledged(worker), timeout=30, what="every batch answered")
        harness.stub.Echo(echo_pb2.EchoRequest(text="carries the report"))
        assert harness.interceptor.flush(10)
        wait_for(lambda: _all_acknowledged(worker), timeout=30, what="the report answered")
        assert worker._held.unkept()  # acknowledged, and only in the worker's memory
        (tmp_path / "slow").unlink()  # the next worker commits as usual
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        wait_for(lambda: worker.restarts == 1 or None, timeout=60, what="the worker's restart")
        assert worker.flush(30)
        # The worker tells when its spool kept the report (then it is sent no more).
        wait_for(lambda: not worker._held.unkept() or None, timeout=30, what="the report kept")
    finally:
        harness.close()
        worker.close()
    # And the 21 calls' events the killed worker had answered and not committed (its
    # spool commits only at close): lost with it, and counted since 2026-12-08.
    assert dropped_in_spool(tmp_path) == worker.lost == 30 + 21


def test_the_loss_reports_sent_to_a_worker_started_again_answer_no_caller(
    tmp_path: Path,
) -> None:
    """The batch of loss reports a worker started again is sent first is not the batch
    callers waiting for the pending items' commit were promised: its answer must not
    tell them their events are committed."""
    worker = _worker(tmp_path, max_held=0)  # not started: no process
    with worker._cond:
        assert worker._held.take(5, wait=False) == 0  # 5 lost
        worker._outbox.take(worker._held.report())  # the report goes out in a batch
        worker._outbox.pending.append(("flush",))
        promised = worker._send_waited()  # a caller waits for the pending items
        batches = worker._resend()
        assert [item[0] for item in batches[0].items] == ["lost"]
        worker._answered(batches[0].batch_id, "")
        assert not worker._answers._answer(promised).done.is_set()
        assert worker._outbox.take([]).batch_id == promised  # still theirs


def test_a_loss_report_kept_by_a_worker_that_died_before_answering_is_counted_once(
    tmp_path: Path,
) -> None:
    """The worker counts the report of 30 lost events, commits their drop marker and
    dies before it answers: the next worker, sent the report again, does not count it
    a second time."""
    worker = AuditWorker(functools.partial(dies_once, str(tmp_path)), max_held=20)
    harness = Harness("sync", sink=worker)
    try:
        with _thirty_lost(worker, harness):
            # Two batches wait in the pipe, to be taken in one round: the report
            # (after a notice that does nothing), then the notice that kills.
            worker.notify("nothing")
            wait_for(lambda: worker._held.unkept() or None, timeout=30, what="the report sent")
            worker.notify("die")
            wait_for(lambda: _sent(worker, "die"), timeout=30, what="'die' sent")
            with worker._link._send_lock:
                pass  # its batch is written to the pipe, not only registered
        wait_for(lambda: worker.restarts == 1 or None, timeout=60, what="the worker's restart")
        assert (tmp_path / "died").exists()
        assert worker.flush(30)
    finally:
        harness.close()
        worker.close()
    assert dropped_in_spool(tmp_path) == worker.lost == 30


def test_async_events_reach_the_spool_without_a_flush(tmp_path: Path) -> None:
    worker = _worker(tmp_path, flush_interval=0.05)
    harness = Harness("sync", sink=worker)
    try:
        harness.stub.Echo(echo_pb2.EchoRequest(text="unflushed"))
        # Nobody flushes: the worker is sent the capture by itself, and exports it.
        wait_for(lambda: _exported(tmp_path) or None, timeout=30, what="the event exported")
    finally:
        harness.close()
        worker.close()


def test_a_notice_the_pipeline_cannot_follow_leaves_the_worker_running(tmp_path: Path) -> None:
    worker = AuditWorker(functools.partial(notice_fails, str(tmp_path)))
    harness = Harness("sync", sink=worker)
    try:
        worker.notify("settings", (True, "bucket"))
        assert harness.stub.Echo(echo_pb2.EchoRequest(text="after")).text == "after"
        assert harness.interceptor.flush(10)
        assert worker.flush(10)
        # The notice was logged, not fatal: a worker crashing on it would be resent
        # the same batch, and crash again until given up.
        assert worker.restarts == 0
        assert not worker.lost
    finally:
        harness.close()
        worker.close()


def test_an_asyncio_call_that_ends_while_it_awaits_the_worker_leaves_the_server_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The client's deadline passes while its fail-closed call awaits the worker's
    answer: the call's task is cancelled, and the answer that comes later finds no
    one to tell; the event loop reports no error and goes on serving."""
    worker = _worker(tmp_path, ack_timeout=600)
    harness = Harness("aio", sink=worker, fail_closed=True)
    try:
        harness.stub.Echo(echo_pb2.EchoRequest(text="first"))
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGSTOP)  # alive and silent: nothing is answered
        try:
            late = echo_pb2.EchoRequest(text="too-late")
            code = code_of(lambda: harness.stub.Echo(late, timeout=0.5))
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        assert worker.flush(30)  # the answer to the late call's batch came
        assert harness.stub.Echo(echo_pb2.EchoRequest(text="after")).text == "after"
    finally:
        harness.close()
        worker.close()
    assert worker.restarts == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    texts = Counter(d["Request"]["RequestParams"].get("text") for d in _exported(tmp_path))
    # The late call's capture had gone to the worker: its event is committed once the
    # worker goes on (saying what the handler answered, as fail-closed events do).
    assert texts == {"first": 1, "too-late": 1, "after": 1}


def test_an_asyncio_call_cancelled_while_its_events_are_refused_is_still_counted(
    tmp_path: Path,
) -> None:
    """The keeping goes on after the call is cancelled: when the log then refuses the
    call's events (here: the worker is given up), the failure is counted and the
    UNAVAILABLE record is handed on (counted as lost, with no worker left), as for a
    call that was not cancelled — not dropped with the cancelled task."""
    worker = _worker(tmp_path, max_restarts=0, ack_timeout=600)
    harness = Harness("aio", sink=worker, fail_closed=True)
    try:
        harness.stub.Echo(echo_pb2.EchoRequest(text="first"))
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGSTOP)  # the next batch waits, unanswered
        late = echo_pb2.EchoRequest(text="too-late")
        assert code_of(lambda: harness.stub.Echo(late, timeout=0.5)) == (
            grpc.StatusCode.DEADLINE_EXCEEDED
        )
        assert harness.interceptor.sink_errors == 0
        os.kill(worker.pid, signal.SIGKILL)  # given up: the batch is refused
        wait_for(
            lambda: harness.interceptor.sink_errors == 1 or None,
            timeout=30,
            what="the refusal of the cancelled call's events counted",
        )
        wait_for(lambda: worker.lost >= 1 or None, timeout=30, what="its UNAVAILABLE record")
    finally:
        harness.close()
        worker.close()


def test_a_closed_worker_answers_callers_at_once(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    harness = Harness("sync", sink=worker, fail_closed=True)
    harness.stub.Echo(echo_pb2.EchoRequest(text="first"))
    harness.close()
    worker.close()
    # Nothing is left to answer: a caller is refused at once rather than left waiting.
    assert worker.flush(timeout=30) is False
    with pytest.raises(AuditUnavailableError, match="closed"):
        worker.admit()


def test_asyncio_fail_closed_calls_that_come_during_a_commit_share_the_next(
    tmp_path: Path,
) -> None:
    """A group commit on the event loop: while one batch that callers wait for is being
    committed, the fail-closed calls that come meanwhile are held back, and go together
    in one batch when it is answered; each is answered once its events are kept."""
    worker = _worker(tmp_path, ack_timeout=600)
    harness = Harness("aio", sink=worker, fail_closed=True)
    outbox = worker._outbox  # what was sent and what waits to be
    try:
        harness.stub.Echo(echo_pb2.EchoRequest(text="first"))
        assert worker.pid is not None
        sent_before = outbox.next_id

        def in_the_outbox() -> bool | None:
            with worker._cond:
                sent = sum(batch.events for batch in outbox.unacknowledged())
                held = sum(item[0] == "capture" for item in outbox.pending)
                return sent + held == 4 or None

        with ThreadPoolExecutor(4) as pool:
            os.kill(worker.pid, signal.SIGSTOP)  # the next batch waits, unanswered
            try:
                calls = [
                    pool.submit(harness.stub.Echo, echo_pb2.EchoRequest(text=f"c{i}"), timeout=60)
                    for i in range(4)
                ]
                wait_for(in_the_outbox, timeout=30, what="the four calls' captures")
                with worker._cond:
                    # One batch went; the calls that came after it wait for its answer.
                    assert len(outbox.unacknowledged()) == 1
            finally:
                os.kill(worker.pid, signal.SIGCONT)
            assert sorted(call.result().text for call in calls) == ["c0", "c1", "c2", "c3"]
        assert outbox.next_id - sent_before <= 2  # the one in flight, then the rest
    finally:
        harness.close()
        worker.close()
    texts = Counter(d["Request"]["RequestParams"].get("text") for d in _exported(tmp_path))
    assert texts == {"first": 1, "c0": 1, "c1": 1, "c2": 1, "c3": 1}


def _documents(count: int, pad: int = 0) -> list[EventDocument]:
    now = time.time_ns()
    events = [
        event_pb2.ApiEvent(event_name="Echo", event_id=str(uuid.uuid4()), version="2")
        for _ in range(count)
    ]
    for event in events:
        event.request.request_time.FromNanoseconds(now)
        event.response.response_time.FromNanoseconds(now)
        if pad:
            event.request.request_params.update({"pad": "x" * pad})
    return [event_document(event) for event in events]


def _started(worker: AuditWorker) -> AuditWorker:
    worker.start(AuditConfig(node_id="n"))
    return worker


def test_events_a_worker_given_up_had_not_acknowledged_are_counted_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Sent, not acknowledged, and no worker left to send them to: counted, in
    `lost` and in the log (no marker can be written). They were counted nowhere."""
    pipeline = functools.partial(spool_only, str(tmp_path), "async")
    worker = _started(AuditWorker(pipeline, max_restarts=0, ack_timeout=600))
    try:
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGSTOP)  # alive and silent: nothing is acknowledged
        worker.emit_documents(_documents(10), wait=False)
        wait_for(lambda: worker._outbox.unacknowledged() or None, timeout=10, what="the send")
        os.kill(worker.pid, signal.SIGKILL)
        wait_for(lambda: worker.lost or None, timeout=30, what="the worker given up")
        assert worker.lost == 10
        assert "10 audit events held for the worker are lost" in caplog.text
    finally:
        worker.close(5)
    assert not spooled_documents(tmp_path)


def test_events_handed_over_while_the_worker_closes_are_sent_before_it_quits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After close's flush and before the quit (a server's own event, say): the sender
    sends them before the quit, after which the worker reads nothing. They were
    written after it, and lost uncounted."""
    worker = _started(AuditWorker(functools.partial(spool_only, str(tmp_path), "async")))
    flush = worker.flush

    def flush_then_emit(timeout: float | None = 10.0) -> bool:
        done = flush(timeout)
        worker.emit_documents(_documents(5), wait=False)
        return done

    monkeypatch.setattr(worker, "flush", flush_then_emit)
    worker.close(10)
    assert len(spooled_documents(tmp_path)) == 5
    assert not worker.lost


class _SpoolThatCannotWrite:
    """`flush` never commits; `degraded` once told."""

    def __init__(self, degraded: str) -> None:
        self.degraded = degraded
        self.flushes = 0

    def flush(self, timeout: float | None = None) -> bool:
        self.flushes += 1
        if self.flushes == 3:
            self.degraded = self.degraded or "told late"
        return False


def test_a_flush_while_the_workers_disk_is_full_is_answered_not_taken_for_a_hang() -> None:
    """The worker's spool cannot write: a flush is answered (False) within a second or
    so of its being degraded. It waited for the commit, answered nothing, was taken
    for hung and killed with the events in its spool's memory, which no marker
    counted (a review helper's run: 24 of 321 events counted nowhere)."""
    for degraded in ("the disk is full", ""):
        spool = _SpoolThatCannotWrite(degraded)
        worker: Any = _Worker.__new__(_Worker)
        worker.spool = spool
        assert not worker._flushed()
        assert spool.flushes == (1 if degraded else 3)


def test_async_events_answered_while_the_workers_disk_is_full_are_counted_if_it_dies(
    tmp_path: Path,
) -> None:
    """While its spool cannot write, the worker answers async events it holds only in
    memory. Killed then, it lost them uncounted: no marker, not in `lost` (a review
    helper's run: 100 of 880 events counted nowhere). Now the serving process counts
    them, from the worker's word of how many it holds so."""
    (tmp_path / "store-down").touch()  # the exporter fails: the spool's disk fills
    worker = AuditWorker(
        functools.partial(full_disk_pipeline, str(tmp_path), "async", 8 << 20), ack_timeout=600
    )
    worker.start(AuditConfig(node_id="n"))
    sent = 0

    def fill() -> bool | None:
        nonlocal sent
        worker.emit_documents(_documents(20, pad=200), wait=False)
        sent += 20
        return True if worker.degraded else None

    try:
        wait_for(fill, timeout=60, what="the worker's spool full", interval=0.02)
        worker.emit_documents(_documents(100, pad=200), wait=False)
        sent += 100
        wait_for(lambda: _all_acknowledged(worker), timeout=30, what="every batch answered")
        pid = worker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: worker.restarts or None, timeout=60, what="the worker started again")
        (tmp_path / "store-down").unlink()  # room again: everything goes out
        worker.emit_documents(_documents(1), wait=False)
        sent += 1
        assert worker.flush(60)
    finally:
        worker.close()
    exported = _exported(tmp_path)
    kept = [d for d in exported if d["EventName"] != "AuditEventsDropped"]
    counted = sum(
        int(d["Request"]["RequestParams"]["dropped_events"])
        for d in exported
        if d["EventName"] == "AuditEventsDropped"
    )
    assert len(kept) + counted == sent, (len(kept), counted, sent)
    assert worker.lost > 0  # so that it is they the marker counts


class _BuilderWithABug:
    def documents(self, record: Any, *, event_id: str, next_id: Any) -> list[EventDocument]:
        raise KeyError("a bug")


def test_a_capture_the_worker_cannot_build_costs_one_counted_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raised, it killed the worker, which was sent it again and died again, until it
    was given up and every call refused. Now it is counted lost; a fail-closed call's
    refuses the calls of its round (their events are not kept either)."""
    import auditline.interceptor._worker_process as worker_process

    monkeypatch.setattr(worker_process, "decode_record", lambda data: (None, "id"))
    spool = Spool(tmp_path / "spool.db", node_id="n")
    worker = _Worker(spool, _BuilderWithABug(), None)  # type: ignore[arg-type]
    try:
        (document,) = _documents(1)
        waited = ("document", document.document, document.at_ns, document.end_ns, True)
        error, _ = worker.take([(1, False, [("capture", b"", True), waited])])
        assert error == worker_process.UNBUILT
        error, queued = worker.take([(2, False, [("capture", b"", False)])])
        assert error == ""
        assert spool.flush(10, with_drop_marker=True)
        assert queued.committed()
    finally:
        spool.close()
    assert dropped_in_spool(tmp_path) == 2
    assert [d["EventName"] for d in spooled_documents(tmp_path)] == ["AuditEventsDropped"]
