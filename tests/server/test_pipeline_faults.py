"""The export pipeline under faults: kill -9 in both durability modes, a full spool
(reject, drop), an object store that stops, a spool that cannot write."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from auditline.account.v1 import bucket_pb2
from auditline.audit.v1 import settings_pb2
from auditline.client import Client
from auditline.errors import NotFoundError
from auditline.interceptor.integrity import S3Location, Verifier, VerifierKey
from tests.conftest import ServeFactory
from tests.support.clients import login
from tests.support.exported import DEFAULT_BUCKET, event_of, exported_events
from tests.support.outcome import code_of
from tests.support.pipeline_calls import (
    ADMIN_KEY,
    ADMIN_SECRET,
    ENV,
    check_complete,
    mixed_calls,
    s3_records,
)
from tests.support.processes import wait_for
from tests.support.seaweedfs import SeaweedFS
from tests.support.serve import ServeProcess


def _kill_under_load(
    process: ServeProcess, api: Client, answers: int
) -> tuple[list[tuple[str, float]], float]:
    """Create buckets from four threads; `kill -9` the server once `answers` calls were
    answered. Return each answered bucket with when its answer arrived, and when the
    kill was sent."""
    answered: list[tuple[str, float]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            name = f"k-{uuid.uuid4().hex[:12]}"
            try:
                api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=name), timeout=30)
            except grpc.RpcError:
                return  # the server died under us
            answered.append((name, time.time()))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    wait_for(
        lambda: True if len(answered) >= answers else None,
        timeout=60,
        what=f"{answers} answered calls",
    )
    killed_at = time.time()
    os.kill(process.proc.pid, signal.SIGKILL)
    process.proc.wait(10)
    stop.set()
    for worker in workers:
        worker.join(30)
    return answered, killed_at


def _created_buckets(data_dir: Path) -> set[str]:
    """The buckets whose creation the exported log (checked complete) says succeeded."""
    events = exported_events(data_dir)
    check_complete(events)
    return {
        e["Request"]["RequestParams"].get("bucket_id")
        for e in events
        if e["Method"] == "CreateBucket" and e["Response"]["ResponseStatus"] == "OK"
    }


def test_kill_9_in_sync_mode_loses_no_acknowledged_call(tmp_path: Path, audit_process: str) -> None:
    data_dir = tmp_path / "data"
    args = ["--audit-durability", "sync", "--audit-process", audit_process]
    process = ServeProcess(data_dir, args=args, env=ENV).start()
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    answered, _ = _kill_under_load(process, api, 40)
    acknowledged = [name for name, _ in answered]
    # Restart on the same data directory: the spool is replayed and exported (once an
    # audit worker left behind has committed what it had, and let go of the spool).
    again = ServeProcess(data_dir, args=args, env=ENV).start()
    assert again.terminate() == 0
    exported = _created_buckets(data_dir)
    missing = [name for name in acknowledged if name not in exported]
    assert not missing, f"{len(missing)} acknowledged calls are not in the audit log"


# The README's figure: how long before a `kill -9` a call may have been answered and
# still lose its event in async mode (two 10 ms hand-offs, plus the time to build and
# write a batch under load). Measured by the test below; see "Failure modes".
ASYNC_LOSS_WINDOW = 0.1


def test_kill_9_in_async_mode_loses_at_most_the_documented_window(
    tmp_path: Path, audit_process: str
) -> None:
    data_dir = tmp_path / "data"
    args = ["--audit-process", audit_process]
    process = ServeProcess(data_dir, args=args, env=ENV).start()
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    acknowledged, killed_at = _kill_under_load(process, api, 300)
    again = ServeProcess(data_dir, args=args, env=ENV).start()
    assert again.terminate() == 0
    events = exported_events(data_dir)
    check_complete(events)
    exported = {
        e["Request"]["RequestParams"].get("bucket_id")
        for e in events
        if e["Method"] == "CreateBucket"
    }
    lost = [at for name, at in acknowledged if name not in exported and at <= killed_at]
    window = killed_at - min(lost) if lost else 0.0
    print(
        f"async mode ({audit_process}), kill -9 under load: {len(lost)} of "
        f"{len(acknowledged)} answered calls lost their events; the oldest was answered "
        f"{window * 1000:.1f} ms before the kill"
    )
    assert window <= ASYNC_LOSS_WINDOW


def test_reject_backpressure_refuses_calls_with_unavailable(
    serve: ServeFactory, audit_process: str
) -> None:
    # A tiny spool and an exporter that waits an hour: the spool fills up.
    process = serve(
        "--audit-process",
        audit_process,
        "--backpressure",
        "reject",
        "--spool-max-bytes",
        "65536",
        "--export-interval",
        "3600",
        env=ENV,
    )
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    request = bucket_pb2.ListBucketsRequest(page_size=1)

    def refused() -> bool | None:
        code = code_of(lambda: api.buckets.ListBuckets(request, timeout=30))
        return True if code == grpc.StatusCode.UNAVAILABLE else None

    wait_for(refused, timeout=120, what="the full spool to refuse a call", interval=0)
    # Health and the server itself keep working; nothing accepted is lost on stop.
    assert process.terminate() == 0
    check_complete(exported_events(process.data_dir))


@pytest.fixture
def private_seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS this test may stop and start (others share the session's one)."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweed-outage"))
    server.start()
    yield server
    server.stop()


@pytest.mark.seaweedfs
def test_an_object_store_outage_only_grows_the_spool(
    serve: ServeFactory, private_seaweedfs: SeaweedFS, audit_process: str
) -> None:
    seaweed = private_seaweedfs
    env = ENV | seaweed.aws_env
    process = serve(
        "--audit-process",
        audit_process,
        "--object-store",
        seaweed.store_url,
        "--export-interval",
        "0.5",
        env=env,
    )
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    before = mixed_calls(api, 6)
    wait_for(
        lambda: True if s3_records(seaweed) else None, timeout=30, what="a first exported file"
    )
    seaweed.stop()
    during = mixed_calls(api, 6)  # the service keeps serving while the store is down
    wait_for(
        lambda: True if "exporter default failed" in process.log() else None,
        timeout=60,
        what="the exporter to report ERROR",
    )
    seaweed.start()
    after = mixed_calls(api, 6)
    wait_for(
        lambda: True if "exporter default recovered" in process.log() else None,
        timeout=120,
        what="the exporter to recover",
    )
    assert process.terminate() == 0
    records = sorted(
        (event_of(r) for rs in s3_records(seaweed).values() for r in rs),
        key=lambda e: int(e["Sequence"]),
    )
    check_complete(records)
    calls = [
        (e["Method"], e["Response"]["ResponseStatus"])
        for e in records
        if e["Service"] == "auditline.account.v1.BucketService"
    ]
    assert calls == before + during + after
    # The log across the outage is proven by its signed checkpoints.
    keys = [
        VerifierKey.parse(k) for k in (process.data_dir / "audit-verifier-keys").read_text().split()
    ]
    report = Verifier(S3Location(DEFAULT_BUCKET, "", seaweed.client()), keys).run()
    assert report.findings == []
    assert report.ok


def test_sync_mode_refuses_a_call_it_cannot_record(tmp_path: Path, audit_process: str) -> None:
    """Fail-closed: when the spool cannot take the event, the call is not executed."""
    data_dir = tmp_path / "data"
    process = ServeProcess(
        data_dir,
        args=[
            "--audit-process",
            audit_process,
            "--audit-durability",
            "sync",
            "--backpressure",
            "reject",
            "--spool-max-bytes",
            "65536",
            "--export-interval",
            "3600",
        ],
        env=ENV,
    ).start()
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    names: list[str] = []

    def refused() -> bool | None:
        name = f"s-{uuid.uuid4().hex[:12]}"
        code = code_of(
            lambda: api.buckets.CreateBucket(
                bucket_pb2.CreateBucketRequest(bucket_id=name), timeout=30
            )
        )
        if code == grpc.StatusCode.UNAVAILABLE:
            names.append(name)
            return True
        return None

    wait_for(refused, timeout=120, what="a refused call", interval=0)
    assert process.terminate() == 0  # the stop exports the spool, which makes room
    again = ServeProcess(data_dir, args=["--audit-process", audit_process], env=ENV).start()
    api = login(again.target, ADMIN_KEY, ADMIN_SECRET)
    # The refused call did not run: its bucket does not exist.
    with pytest.raises(NotFoundError):
        api.buckets.GetBucket(bucket_pb2.GetBucketRequest(name=f"buckets/{names[0]}"))
    assert again.terminate() == 0


def test_drop_backpressure_leaves_a_marker_in_the_exported_log(
    serve: ServeFactory, audit_process: str
) -> None:
    process = serve(
        "--audit-process",
        audit_process,
        "--backpressure",
        "drop",
        "--spool-max-bytes",
        "65536",
        "--export-interval",
        "3600",
        env=ENV,
    )
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    request = bucket_pb2.ListBucketsRequest(page_size=1)
    for _ in range(400):  # about 300 bytes an event: well past 64 KiB
        api.buckets.ListBuckets(request, timeout=30)
    assert process.terminate() == 0
    events = exported_events(process.data_dir)
    check_complete(events)
    markers = [e for e in events if e["EventName"] == "AuditEventsDropped"]
    assert len(markers) == 1
    dropped = markers[0]["Request"]["RequestParams"]["dropped_events"]
    assert dropped > 0
    assert markers[0]["Response"]["ResponseStatus"] == "DATA_LOSS"
    listed = [e for e in events if e["Method"] == "ListBuckets"]
    assert len(listed) + dropped == 400


def _audit_worker_pid(server_pid: int) -> int | None:
    """The audit worker among a server's child processes (multiprocessing's spawn)."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    for child in children:
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            return int(child)
    return None


def test_a_killed_audit_worker_is_restarted_and_loses_no_acknowledged_call(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    args = ["--audit-durability", "sync", "--audit-process", "worker"]
    process = ServeProcess(data_dir, args=args, env=ENV).start()
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    worker = _audit_worker_pid(process.proc.pid)
    assert worker is not None
    answered: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            name = f"w-{uuid.uuid4().hex[:12]}"
            request = bucket_pb2.CreateBucketRequest(bucket_id=name)
            if code_of(lambda: api.buckets.CreateBucket(request, timeout=30)) == grpc.StatusCode.OK:  # noqa: B023
                answered.append(name)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(answered) >= 30 or None, timeout=60, what="calls before the kill")
        os.kill(worker, signal.SIGKILL)
        wait_for(
            lambda: "starting it again" in process.log() or None,
            timeout=60,
            what="the worker started again",
        )
        served = len(answered)
        wait_for(lambda: len(answered) >= served + 30 or None, timeout=60, what="calls after it")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert process.terminate() == 0
    exported = _created_buckets(data_dir)
    assert [name for name in answered if name not in exported] == []


def test_a_call_before_audit_logs_were_disabled_keeps_its_event_through_a_worker_restart(
    tmp_path: Path,
) -> None:
    """A worker started again judged the captures resent to it by the settings of now:
    the event of a call made (and answered OK) just before account audit logs were
    disabled was dropped as if they had been off (found by a review helper)."""
    data_dir = tmp_path / "data"
    args = ["--audit-durability", "sync", "--audit-process", "worker"]
    process = ServeProcess(data_dir, args=args, env=ENV).start()
    api = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    assert api.settings.GetAuditSettings(
        settings_pb2.GetAuditSettingsRequest()
    ).settings.account_audit_logs_enabled
    worker = _audit_worker_pid(process.proc.pid)
    assert worker is not None
    os.kill(worker, signal.SIGSTOP)  # it keeps nothing: fail-closed calls wait
    outcomes: dict[str, grpc.StatusCode | None] = {}

    def call(name: str, rpc: Callable[[], object]) -> threading.Thread:
        thread = threading.Thread(target=lambda: outcomes.update({name: code_of(rpc)}))
        thread.start()
        return thread

    database = data_dir / "auditline.db"
    try:
        threads = [
            call(
                "create",
                lambda: api.buckets.CreateBucket(
                    bucket_pb2.CreateBucketRequest(bucket_id="made-before"), timeout=120
                ),
            )
        ]
        wait_for(
            lambda: (data_dir / "objects" / "made-before").exists() or None,
            timeout=30,
            what="the bucket made (the call waiting for its event)",
        )
        threads.append(
            call(
                "disable",
                lambda: api.settings.DisableAccountAuditLogs(
                    settings_pb2.DisableAccountAuditLogsRequest(), timeout=120
                ),
            )
        )
        wait_for(
            lambda: not _logs_enabled(database) or None,
            timeout=30,
            what="account audit logs disabled (the call waiting for its event)",
        )
    finally:
        os.kill(worker, signal.SIGKILL)  # started again, and sent both calls again
        for thread in threads:
            thread.join(120)
    assert outcomes == {"create": grpc.StatusCode.OK, "disable": grpc.StatusCode.OK}
    assert process.terminate() == 0
    assert "made-before" in _created_buckets(data_dir)


def _logs_enabled(database: Path) -> bool:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return bool(db.execute("SELECT account_logs_enabled FROM audit_settings").fetchone()[0])
