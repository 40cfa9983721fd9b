"""`Spool.keep_documents`: fail-closed events awaited on an asyncio event loop. Callers
wait for the writer's commit on the loop (no executor thread each), are refused when
their events are not committed in time, and those events are then never written."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from auditline_testing.v1 import echo_pb2

from auditline.audit.v1 import event_pb2
from auditline.interceptor import AuditUnavailableError, Spool
from auditline.interceptor._formats import event_document
from auditline.interceptor._spool_queue import AsyncCaller, SpoolBatch, answer
from auditline.interceptor._spool_records import ExportedFile
from auditline.interceptor._types import EventDocument
from tests.interceptor.harness import Harness
from tests.support.outcome import code_of
from tests.support.processes import wait_for


def _document(name: str, size: int = 0) -> EventDocument:
    event = event_pb2.ApiEvent(event_name=name, version="2")
    event.request.request_time.FromNanoseconds(1_800_000_000_000_000_000)
    if size:
        event.request.request_params.update({"pad": "x" * size})
    return event_document(event)


def _names(spool: Spool) -> list[str]:
    return [e.event().event_name for e in spool.store.read(0, limit=1_000_000)]


async def _keep(spool: Spool, name: str) -> None:
    """Keep one event, failing the test rather than waiting forever."""
    await asyncio.wait_for(spool.keep_documents([_document(name)]), 30)


class _NoThreads(concurrent.futures.ThreadPoolExecutor):
    """A loop's default executor that refuses work: the awaited path must not use one."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("keep_documents used an executor thread")


def _count_commits(spool: Spool) -> list[int]:
    """Count the writer's commits (each batch's insert), in the list returned."""
    commits = [0]
    insert = spool._disk.insert_what_fits

    def counted(calls: list[list[Any]], **options: Any) -> int:
        commits[0] += 1
        return insert(calls, **options)

    spool._disk.insert_what_fits = counted  # type: ignore[method-assign]
    return commits


@dataclasses.dataclass(frozen=True, kw_only=True)
class _HangingDisk:
    """The spool's disk hangs on its next write until `release`d (10 s at most)."""

    stuck: threading.Event  # the writer is in the hanging write
    release: threading.Event
    came_back: threading.Event  # the hanging write went on


def _hang_next_write(spool: Spool) -> _HangingDisk:
    disk = _HangingDisk(
        stuck=threading.Event(), release=threading.Event(), came_back=threading.Event()
    )
    insert = spool._disk.insert_what_fits

    def hanging_insert(calls: list[list[Any]], **options: Any) -> int:
        if not disk.release.is_set():
            disk.stuck.set()
            disk.release.wait(10)
            disk.came_back.set()
        return insert(calls, **options)

    spool._disk.insert_what_fits = hanging_insert  # type: ignore[method-assign]
    return disk


def test_awaited_events_are_committed_together_without_a_thread_each(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", durability="sync")
    commits = _count_commits(spool)

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(_NoThreads())
        await asyncio.gather(*(_keep(spool, f"E{i}") for i in range(100)))

    asyncio.run(main())
    # Returned: committed (no flush needed to find them).
    assert sorted(_names(spool)) == sorted(f"E{i}" for i in range(100))
    assert commits[0] < 50, commits  # callers share commits, not one each
    spool.close()


def test_thread_and_asyncio_callers_of_one_spool_are_all_answered(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", durability="sync")

    def thread_calls() -> None:
        for i in range(50):
            spool.emit_documents([_document(f"T{i}")], wait=True)

    async def main() -> None:
        threaded = asyncio.get_running_loop().run_in_executor(None, thread_calls)
        for i in range(50):
            await _keep(spool, f"A{i}")
        await asyncio.wait_for(threaded, 30)

    asyncio.run(main())
    assert sorted(_names(spool)) == sorted(
        [f"T{i}" for i in range(50)] + [f"A{i}" for i in range(50)]
    )
    spool.close()


def test_a_refused_call_raises_at_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", durability="sync")
    spool.close()
    with pytest.raises(AuditUnavailableError, match="closed"):
        asyncio.run(_keep(spool, "Late"))


def _full_spool(path: Path, *, block_timeout: float) -> Spool:
    """A fail-closed spool whose file reached its page limit (SQLite's SQLITE_FULL):
    nothing more can be committed until exported events are freed."""
    spool = Spool(
        path,
        durability="sync",
        max_file_bytes=256 << 10,
        reserve_bytes=32 << 10,
        block_timeout=block_timeout,
    )
    spool.retry_interval = 0.02
    # Large events until one cannot be written, then (the spool's reserve released for
    # the calls in flight) events as small as the tests' until none fits either.
    for size in (2000, 0):
        for i in range(5000):
            try:
                spool.emit_documents([_document(f"Fill{size}-{i}", size=size)], wait=True)
            except AuditUnavailableError:
                break
        else:
            pytest.fail("the spool never filled up")
    assert spool.degraded
    return spool


@pytest.fixture
def full_spool(tmp_path: Path) -> Spool:
    return _full_spool(tmp_path / "spool.db", block_timeout=0.3)


def _free_and_flush(spool: Spool) -> None:
    """Export (free) everything written; let the spool write what is left."""
    store = spool.store
    last = spool.stats.last_seq
    store.register("drain", start_seq=1)
    store.commit_files(
        "drain",
        [ExportedFile(key="k", first_seq=1, last_seq=last, events=0, bytes=0, sha256="")],
        watermark=last,
        since=store.watermark("drain"),
    )
    assert spool.flush(30)


def test_events_not_committed_in_time_are_refused_and_never_written(full_spool: Spool) -> None:
    with pytest.raises(AuditUnavailableError, match="in time"):
        asyncio.run(_keep(full_spool, "Withdrawn"))
    _free_and_flush(full_spool)
    asyncio.run(_keep(full_spool, "After"))  # room again
    assert _names(full_spool) == ["After"]
    full_spool.close()


def test_a_cancelled_caller_is_told_when_its_events_are_withdrawn(full_spool: Spool) -> None:
    refusals: list[Exception] = []

    async def main() -> None:
        told = asyncio.Event()

        def refused_later(exc: Exception) -> None:
            refusals.append(exc)
            told.set()

        call = asyncio.create_task(
            full_spool.keep_documents([_document("Cancelled")], refused_later=refused_later)
        )
        await asyncio.sleep(0)  # one loop step: the call has queued its events and waits
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(told.wait(), 30)

    asyncio.run(main())
    assert [str(exc) for exc in refusals] == ["the audit log could not record this call in time"]
    _free_and_flush(full_spool)
    asyncio.run(_keep(full_spool, "After"))
    assert _names(full_spool) == ["After"]
    full_spool.close()


def test_a_cancelled_caller_whose_events_are_committed_hears_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", durability="sync")
    refusals: list[Exception] = []

    async def main() -> None:
        call = asyncio.create_task(
            spool.keep_documents([_document("Kept")], refused_later=refusals.append)
        )
        await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # Its events were queued before it was cancelled: they are written all the same.
        await asyncio.to_thread(spool.flush, 30)

    asyncio.run(main())
    assert _names(spool) == ["Kept"]
    assert refusals == []
    spool.close()


class _AdmitsEveryCall:
    """A sink without `admit` (the spool would refuse calls while its disk is full):
    the calls run, and their events wait for the full spool."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.emit_documents = spool.emit_documents
        self.kept = 0  # calls that awaited `keep_documents` (not a thread's wait)

    async def keep_documents(self, documents: Any, *, refused_later: Any) -> None:
        self.kept += 1
        await self.spool.keep_documents(documents, refused_later=refused_later)

    def emit(self, event: event_pb2.ApiEvent) -> None:
        self.spool.emit(event)


def test_an_asyncio_call_cancelled_while_its_events_wait_is_still_counted(
    tmp_path: Path,
) -> None:
    """In-process (the spool as the sink), as with an audit worker: an asyncio call
    whose deadline passes while its events wait is gone, but when they are then
    withdrawn the failure is counted and its UNAVAILABLE record handed on."""
    spool = _full_spool(tmp_path / "spool.db", block_timeout=2.0)
    sink = _AdmitsEveryCall(spool)
    harness = Harness("aio", sink=sink, fail_closed=True)
    try:
        late = echo_pb2.EchoRequest(text="too-late")
        assert code_of(lambda: harness.stub.Echo(late, timeout=0.5)) == (
            grpc.StatusCode.DEADLINE_EXCEEDED
        )
        assert sink.kept == 1
        assert harness.interceptor.sink_errors == 0  # its events still wait
        wait_for(
            lambda: harness.interceptor.sink_errors == 1 or None,
            timeout=30,
            what="the withdrawal of the cancelled call's events counted",
        )
        assert harness.interceptor.flush(10)  # its UNAVAILABLE record, to the spool
        _free_and_flush(spool)
        events = [e.event() for e in spool.store.read(0)]
        assert [(e.request.request_params["text"], e.response.response_code) for e in events] == [
            ("too-late", grpc.StatusCode.UNAVAILABLE.value[0])
        ]
    finally:
        harness.close()
        spool.close()


def test_a_refusal_answered_as_the_caller_is_cancelled_is_still_its(full_spool: Spool) -> None:
    """The refusal reaches the caller's future in the same loop step as its
    cancellation: the task ends cancelled, and the refusal goes to `refused_later`."""
    refusals: list[Exception] = []

    async def main() -> None:
        call = asyncio.create_task(
            full_spool.keep_documents([_document("Raced")], refused_later=refusals.append)
        )
        await asyncio.sleep(0)  # one loop step: it has queued its events and waits
        caller = full_spool._queue.async_callers._batches[-1].async_callers[-1]
        with full_spool._lock:  # withdrawn now (the writer retries every 20 ms)
            full_spool._written.wait_for(lambda: caller.batch.state != "writing", 30)
            assert full_spool._queue.async_callers.expire(caller, full_spool._withdraw)
        answer([(caller, AuditUnavailableError("refused"))])  # as the writer's would
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(main())
    assert [str(exc) for exc in refusals] == ["refused"]
    full_spool.close()


def test_a_spool_whose_open_batch_was_emptied_still_closes(tmp_path: Path) -> None:
    """Every call's events withdrawn from the batch still open (its callers timed out
    before the writer took it): the empty batch must not keep the writer from ending."""
    spool = Spool(tmp_path / "spool.db", durability="sync", block_timeout=30)
    with spool._lock:  # the writer cannot take the batch meanwhile
        items = spool._stored([_document("Withdrawn")])
        batch = spool._enqueue(items, wait=True)
        assert batch is not None
        assert batch.state == "open"
        spool._withdraw(batch, items)
    closing = threading.Thread(target=spool.close, daemon=True)
    closing.start()
    closing.join(10)  # not the 30 s of block_timeout plus the writer's own 30 s
    assert not closing.is_alive()


def test_a_caller_is_refused_on_time_while_the_writer_is_stuck_on_another_batch(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool.db", durability="sync", block_timeout=0.3)
    disk = _hang_next_write(spool)
    first = threading.Thread(target=lambda: spool.emit_documents([_document("First")], wait=False))
    first.start()
    assert disk.stuck.wait(30)
    try:
        # Its batch is not the one being written: refused at its deadline, not when
        # the writer comes back.
        with pytest.raises(AuditUnavailableError, match="in time"):
            asyncio.run(_keep(spool, "Second"))
        assert not disk.came_back.is_set()
    finally:
        disk.release.set()
        first.join(30)
    assert spool.flush(30)
    assert _names(spool) == ["First"]
    spool.close()


def test_a_caller_whose_refused_later_fails_does_not_keep_others_waiting() -> None:
    told: list[str] = []

    def fails(exc: Exception) -> None:
        raise RuntimeError("a bug in the caller's handler")

    async def main() -> tuple[AsyncCaller, ...]:
        loop = asyncio.get_running_loop()
        callers = tuple(
            AsyncCaller(
                loop=loop,
                future=loop.create_future(),
                batch=SpoolBatch(),
                items=[],
                ids=set(),
                deadline=0.0,
                refused_later=refused_later,
            )
            for refused_later in (fails, lambda exc: told.append(str(exc)), None)
        )
        callers[0].future.cancel()  # two callers gone, one still waiting
        callers[1].future.cancel()
        answer([(caller, AuditUnavailableError("refused")) for caller in callers])
        with pytest.raises(AuditUnavailableError, match="refused"):
            await callers[2].future
        return callers

    asyncio.run(main())
    assert told == ["refused"]


def test_a_caller_in_a_batch_the_writer_has_not_reached_is_refused_on_time(
    tmp_path: Path,
) -> None:
    """The writer takes two batches and hangs on the first: a caller of the second is
    refused at its deadline, not when the writer comes back."""
    spool = Spool(tmp_path / "spool.db", durability="sync", block_timeout=0.3)

    async def main() -> None:
        with spool._lock:  # both batches queued before the writer takes either
            first = spool._enqueue(spool._stored([_document("First")]), wait=False)
            assert first is not None
            first.state = "queued"
            disk = _hang_next_write(spool)
            second = asyncio.ensure_future(spool.keep_documents([_document("Second")]))
            await asyncio.sleep(0)  # it has queued its events in a batch of its own
            assert spool._queue.events() == 2
        assert await asyncio.to_thread(disk.stuck.wait, 30)
        try:
            with pytest.raises(AuditUnavailableError, match="in time"):
                await asyncio.wait_for(second, 30)
            assert not disk.came_back.is_set()
        finally:
            disk.release.set()

    asyncio.run(main())
    assert spool.flush(30)
    assert _names(spool) == ["First"]
    spool.close()
