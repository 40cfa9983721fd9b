"""The audit path under a full disk: SQLite's own SQLITE_FULL (the spool's page limit),
under concurrent load of every call shape, on sync and asyncio servers, in both
durability modes. The assertions are the product's promises:

- no handler ran without its event reaching the spool;
- fail-closed (sync): every answer the client saw is recorded with its code, or it
  is UNAVAILABLE;
- async: nothing is lost silently: events plus the drop markers' counts add up to
  the calls made, exactly;
- the server recovers without a restart once there is room again.
"""

from __future__ import annotations

import functools
import itertools
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from auditline_testing.v1 import echo_pb2, echo_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from auditline.interceptor import (
    AsyncAuditInterceptor,
    AuditInterceptor,
    AuditUnavailableError,
    AuditWorker,
    LocalDirectory,
    Spool,
    instrument,
    read_exported,
)
from auditline.interceptor._spool_records import ExportedFile
from tests.interceptor.harness import MODES
from tests.support.echo import RAN, AsyncServer, SyncServer
from tests.support.processes import wait_for
from tests.support.worker_pipelines import full_disk_pipeline

R = echo_pb2.EchoRequest
# (stub method, how to call it with a text, the action) — every shape, several outcomes.
Shape = Callable[[echo_pb2_grpc.EchoServiceStub, str, str], Any]
SHAPES: tuple[Shape, ...] = (
    lambda s, text, action: s.Echo(R(text=text, action=action), timeout=30),
    lambda s, text, action: s.CreateThing(R(text=text, action=action), timeout=30),
    lambda s, text, action: list(s.ListThings(R(text=text, action=action), timeout=30)),
    lambda s, text, action: s.UploadThings(iter([R(text=text, action=action)]), timeout=30),
    lambda s, text, action: list(s.ChatThings(iter([R(text=text, action=action)]), timeout=30)),
)
ACTIONS = ("", "", "abort", "raise", "set_code")


class FullDisk:
    """An echo server whose audit spool lives under a small page limit: it fills after a
    few hundred events.

    In-process, the spool has no exporter and the test frees it itself. With an audit
    worker (`mode="worker"`) the spool is the worker's, and its exporter fails while
    the object store is down (`tmp_path/store-down`): the disk fills because the store
    stopped, and recovers when the store is back.
    """

    def __init__(self, tmp_path: Path, *, flavour: str, durability: str, mode: str) -> None:
        self.root = tmp_path
        self.spool: Spool | None = None
        self.worker: AuditWorker | None = None
        sink: Spool | AuditWorker
        if mode == "in-process":
            sink = self.spool = Spool(
                tmp_path / "spool.db",
                durability=durability,
                max_file_bytes=384 << 10,
                reserve_bytes=64 << 10,
                max_memory_bytes=32 << 10,
                block_timeout=5,
            )
            self.spool.retry_interval = 0.05
        else:
            (tmp_path / "store-down").touch()
            sink = self.worker = AuditWorker(
                functools.partial(full_disk_pipeline, str(tmp_path), durability)
            )
        fail_closed = durability == "sync"
        self.interceptor: AuditInterceptor | AsyncAuditInterceptor
        if flavour == "sync":
            self.interceptor = AuditInterceptor(sink, fail_closed=fail_closed)
            self.server: SyncServer | AsyncServer = SyncServer([self.interceptor])
        else:
            self.interceptor = AsyncAuditInterceptor(sink, fail_closed=fail_closed)
            self.server = AsyncServer([self.interceptor])
        self.channel = grpc.insecure_channel(self.server.target)
        self.stub = echo_pb2_grpc.EchoServiceStub(self.channel)
        self.outcomes: dict[str, grpc.StatusCode] = {}  # text → what the client saw
        self.degraded_calls = 0
        self._run_id = uuid.uuid4().hex[:10]
        self._picks = itertools.count()  # its next() is atomic: threads share it
        self._closed = False

    def degraded(self) -> bool:
        if self.spool is not None:
            return bool(self.spool.degraded)
        assert self.worker is not None
        try:
            self.worker.admit()
        except AuditUnavailableError:
            return True
        return False

    def dropping(self) -> bool:
        """Async: events are being dropped (as the worker's spool reports it)."""
        if self.spool is not None:
            return self.spool.stats.dropped >= 50
        assert self.worker is not None
        return self.worker.dropped >= 50

    def call(self) -> grpc.StatusCode:
        pick = next(self._picks)
        text = f"c-{self._run_id}-{pick}"
        shape, action = SHAPES[pick % len(SHAPES)], ACTIONS[pick % len(ACTIONS)]
        degraded = self.degraded()
        try:
            shape(self.stub, text, action)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        self.outcomes[text] = code
        if degraded:
            self.degraded_calls += 1
        return code

    def load(self, *, until: Callable[[], bool], threads: int = 4) -> None:
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                self.call()

        workers = [threading.Thread(target=run) for _ in range(threads)]
        for worker in workers:
            worker.start()
        try:
            wait_for(lambda: True if until() else None, timeout=120, what="the load's goal")
        finally:
            stop.set()
            for worker in workers:
                worker.join(60)

    def recover(self, *, last_call: bool) -> list[dict[str, Any]]:
        """Make room until the spool has written its backlog and recovered (with
        `last_call`, make one more call that must go through); close everything and
        return every event the spool held."""
        assert self.interceptor.flush(10)  # the refusals' own events
        if self.spool is None:
            return self._recover_worker(last_call=last_call)
        spool = self.spool
        events: list[dict[str, Any]] = []

        def recovered() -> bool | None:
            events.extend(_free_all(spool))
            return True if not spool.degraded and not spool.stats.buffered_bytes else None

        wait_for(recovered, timeout=60, what="the spool to recover")
        if last_call:
            self.call()
        assert spool.flush(10, with_drop_marker=True)
        events += _free_all(spool)
        self.close()
        return events

    def _recover_worker(self, *, last_call: bool) -> list[dict[str, Any]]:
        (self.root / "store-down").unlink()
        if last_call:
            # Refused until the worker's spool has room again; then it goes through.
            wait_for(
                lambda: True if self.call() != grpc.StatusCode.UNAVAILABLE else None,
                timeout=60,
                what="a call to go through",
            )
        self.close()  # the worker's pipeline writes what is left, with a drop marker
        return [e.document for e in read_exported(LocalDirectory(self.root / "objects"))]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.channel.close()
        self.server.stop()
        self.interceptor.close()
        if self.spool is not None:
            self.spool.close()
        if self.worker is not None:
            self.worker.close()


@pytest.fixture(params=["sync", "aio"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _free_all(spool: Spool) -> list[dict[str, Any]]:
    """Export (free) every event written so far; return them."""
    store = spool.store
    events = [e.document() for e in store.read(0, limit=1_000_000)]
    if events:
        store.register("drain", start_seq=1)
        last = int(events[-1]["Sequence"])
        store.commit_files(
            "drain",
            [ExportedFile(key="k", first_seq=1, last_seq=last, events=0, bytes=0, sha256="")],
            watermark=last,
            since=store.watermark("drain"),
        )
    return events


def _metric(reader: InMemoryMetricReader, name: str) -> float:
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    point: Any = next(iter(metric.data.data_points))
                    return float(point.value)
    raise AssertionError(f"no metric {name}")


def _text(event: dict[str, Any]) -> str:
    return str(event["Request"]["RequestParams"].get("text", ""))


@pytest.mark.parametrize("mode", MODES)
def test_fail_closed_under_a_full_disk(tmp_path: Path, flavour: str, mode: str) -> None:
    disk = FullDisk(tmp_path, flavour=flavour, durability="sync", mode=mode)
    try:
        disk.load(until=lambda: disk.degraded_calls >= 60)
        # Space is back: the server recovers by itself and records again.
        events = disk.recover(last_call=True)
    finally:
        disk.close()
    recorded: dict[str, list[str]] = {}
    for event in events:
        recorded.setdefault(_text(event), []).append(event["Response"]["ResponseStatus"])
    refused = [t for t, code in disk.outcomes.items() if code == grpc.StatusCode.UNAVAILABLE]
    assert len(refused) >= 60, "the full disk never made the server refuse calls"
    # No handler ran without its event.
    ran = {text for text in disk.outcomes if text in RAN}
    assert ran - recorded.keys() == set()
    # Every answer the client saw is in the log with its code, unless it is UNAVAILABLE.
    for text, code in disk.outcomes.items():
        if code != grpc.StatusCode.UNAVAILABLE:
            assert recorded.get(text) == [code.name], (text, code)
        else:
            assert recorded.get(text, ["UNAVAILABLE"]) == ["UNAVAILABLE"], (text, code)
    # Each refusal is in the log too (a refused stream's requests were never read, so
    # its event has no text), or counted by a marker when it could not be kept, exactly.
    dropped = sum(
        e["Request"]["RequestParams"]["dropped_events"]
        for e in events
        if e["EventName"] == "AuditEventsDropped"
    )
    unavailable = [e for e in events if e["Response"]["ResponseStatus"] == "UNAVAILABLE"]
    assert len(unavailable) + dropped == len(refused)
    # The last call, after recovery, went through and is recorded.
    last = list(disk.outcomes)[-1]
    assert disk.outcomes[last] != grpc.StatusCode.UNAVAILABLE
    assert last in recorded


@pytest.mark.parametrize("mode", MODES)
def test_async_mode_loses_nothing_silently_under_a_full_disk(
    tmp_path: Path, flavour: str, mode: str
) -> None:
    disk = FullDisk(tmp_path, flavour=flavour, durability="async", mode=mode)
    try:
        disk.load(until=disk.dropping)
        events = disk.recover(last_call=False)
    finally:
        disk.close()
    markers = [e for e in events if e["EventName"] == "AuditEventsDropped"]
    assert markers, "events were dropped without a marker"
    dropped = sum(m["Request"]["RequestParams"]["dropped_events"] for m in markers)
    calls = [e for e in events if e["EventName"] != "AuditEventsDropped"]
    # Every call is either in the log or counted by a marker, exactly.
    assert len(calls) + dropped == len(disk.outcomes)
    assert {_text(e) for e in calls} <= disk.outcomes.keys()
    assert all(m["Response"]["ResponseStatus"] == "DATA_LOSS" for m in markers)
    assert all(m["Response"]["ResponseCode"] == 15 for m in markers)
    # Async mode never refuses calls for the audit log's sake.
    assert grpc.StatusCode.UNAVAILABLE not in disk.outcomes.values()


def test_degraded_state_is_reported_and_events_wait_in_memory(tmp_path: Path) -> None:
    spool = Spool(
        tmp_path / "spool.db", max_file_bytes=192 << 10, reserve_bytes=32 << 10, block_timeout=5
    )
    spool.retry_interval = 0.05
    reasons: list[str] = []
    spool.on_degraded = reasons.append
    reader = InMemoryMetricReader()
    instrument(spool, list, meter_provider=MeterProvider(metric_readers=[reader]))
    interceptor = AuditInterceptor(spool)
    server = SyncServer([interceptor])
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = echo_pb2_grpc.EchoServiceStub(channel)
            # Past the page limit, then past the reserve: writes fail.
            wait_for(
                lambda: True if stub.Echo(R(text="x" * 500)) and spool.stats.write_errors else None,
                timeout=60,
                what="failing spool writes",
                interval=0,
            )
            assert reasons == ["the spool's disk is full"]
            assert spool.stats.degraded
            assert _metric(reader, "auditline.audit.degraded") == 1
            assert _metric(reader, "auditline.audit.spool.write_errors") >= 1
            stub.Echo(R(text="waits"))
            assert interceptor.flush(10)
            # The event is neither written nor dropped: it waits in memory.
            assert not spool.flush(0.5)
            assert spool.stats.buffered_bytes > 0
            assert spool.stats.dropped == 0
            # Room again (everything exported): the backlog is written, the spool recovers.
            texts: list[str] = []

            def recovered() -> bool | None:
                texts.extend(_text(e) for e in _free_all(spool))
                return True if not spool.degraded and not spool.stats.buffered_bytes else None

            wait_for(recovered, timeout=30, what="recovery")
            assert reasons[-1] == ""
            assert _metric(reader, "auditline.audit.degraded") == 0
            assert texts[-1] == "waits"
            assert spool.stats.dropped == 0
    finally:
        server.stop()
        interceptor.close()
        spool.close()


def test_a_spool_whose_reserve_does_not_fit_says_so_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Degraded from the start (its disk too small for the reserve), a node refused
    every call in sync mode with no word why in its log (found by a helper)."""
    spool = Spool(tmp_path / "spool.db", reserve_bytes=1 << 50)
    try:
        assert spool.stats.degraded
        assert "degraded from the start: the disk has no room for the reserve" in caplog.text
    finally:
        spool.close()
