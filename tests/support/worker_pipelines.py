"""Pipelines an `AuditWorker` makes in its process (importable by name, as `spawn`
needs) under a directory the test chose, and the events of such a spool read back."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from auditline.audit.v1 import event_pb2
from auditline.interceptor import AuditWorker, DirectoryWriter, ExporterConfig, Pipeline, Spool
from auditline.interceptor._spool_lock import SpoolInUseError
from auditline.interceptor._spool_records import SpooledEvent
from auditline.interceptor.integrity import Notary, SigningKey
from tests.support.processes import wait_for


def spool_and_directory(
    root: str, durability: str = "sync", flush_interval: float = 0.2
) -> Pipeline:
    """The spool at ROOT/spool.db, exported as apievent-json files under ROOT/objects."""
    base = Path(root)
    pipeline = Pipeline(Spool(base / "spool.db", node_id="worker-test", durability=durability))
    pipeline.add_exporter(
        ExporterConfig(name="default", flush_interval=flush_interval),
        DirectoryWriter(base / "objects"),
    )
    return pipeline


def spool_only(root: str, durability: str = "sync") -> Pipeline:
    """The spool at ROOT/spool.db, with no exporter: every event stays in it."""
    return Pipeline(Spool(Path(root) / "spool.db", node_id="worker-test", durability=durability))


class _NoticeFails:
    """`spool_only`'s pipeline with a `notice` that always raises (an embedder's bug)."""

    def __init__(self, root: str) -> None:
        self._pipeline = spool_only(root)

    @property
    def spool(self) -> Spool:
        return self._pipeline.spool

    def notice(self, what: str, value: Any, at_ns: int) -> None:
        raise RuntimeError(f"cannot follow {what}")

    def close(self) -> None:
        self._pipeline.close()


def notice_fails(root: str) -> _NoticeFails:
    return _NoticeFails(root)


def slow_commits(root: str) -> Pipeline:
    """`spool_only`, async; made while ROOT/slow exists, it commits only at its close:
    what the worker acknowledges stays in its memory meanwhile."""
    interval = 3600 if (Path(root) / "slow").exists() else 0.01
    spool = Spool(
        Path(root) / "spool.db", node_id="worker-test", durability="async", commit_interval=interval
    )
    return Pipeline(spool)


class _DiesOnce:
    """`spool_only`'s pipeline whose `notice("die")` commits the drop marker of the
    losses counted so far and ends the process, the first time (ROOT/died remembers)."""

    def __init__(self, root: str) -> None:
        self._pipeline = spool_only(root)
        self._died = Path(root) / "died"

    @property
    def spool(self) -> Spool:
        return self._pipeline.spool

    def notice(self, what: str, value: Any, at_ns: int) -> None:
        if what == "die" and not self._died.exists():
            self._died.touch()
            assert self.spool.flush(timeout=30, with_drop_marker=True)
            os._exit(1)

    def close(self) -> None:
        self._pipeline.close()


def dies_once(root: str) -> _DiesOnce:
    return _DiesOnce(root)


FACTORY_SECRET = "factory-secret-9911"


def fails_when_started_again(root: str) -> Pipeline:
    """`spool_only` the first time; then an error whose message quotes a credential,
    as a connection's may."""
    marker = Path(root) / "started-once"
    if marker.exists():
        raise ConnectionError(f"cannot open s3://AKIAEXAMPLE:{FACTORY_SECRET}@bucket")
    marker.touch()
    return spool_only(root)


def spooled_documents(root: Path) -> list[dict[str, Any]]:
    """The documents of every event in ROOT/spool.db, in sequence order."""
    with contextlib.closing(sqlite3.connect(f"file:{root / 'spool.db'}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT seq, at_ns, end_ns, log_type, body FROM events ORDER BY seq"
        ).fetchall()
    return [SpooledEvent(*row).document() for row in rows]


def dropped_in_spool(root: Path) -> int:
    """The events the drop markers in ROOT/spool.db say were lost, in all."""
    return sum(
        int(d["Request"]["RequestParams"]["dropped_events"])
        for d in spooled_documents(root)
        if d["EventName"] == "AuditEventsDropped"
    )


def signed_directory(root: str, key_text: str, node_id: str) -> Pipeline:
    """The spool at ROOT/spool.db, exported under ROOT/log with checkpoints signed by
    the key, at an interval no test waits for: only closing writes the files."""
    base = Path(root)
    key = SigningKey.parse(key_text)
    pipeline = Pipeline(
        Spool(base / "spool.db", node_id=node_id),
        notary=Notary(key=key, origin=key.name, node_id=node_id),
    )
    pipeline.add_exporter(
        ExporterConfig(name="files", flush_interval=3600), DirectoryWriter(base / "log")
    )
    return pipeline


class _StoreThatStops(DirectoryWriter):
    """A directory that refuses writes while a file named `store-down` is beside it."""

    def put(self, key: str, data: bytes, **options: Any) -> None:
        if (self.root.parent / "store-down").exists():
            raise ConnectionError("the object store is down")
        super().put(key, data, **options)


def full_disk_pipeline(root: str, durability: str, memory_bytes: int = 32 << 10) -> Pipeline:
    """A spool under a small page limit (it fills after a few hundred events) whose
    exporter fails while ROOT/store-down exists, and retries every 50 ms; while it
    cannot write it holds `memory_bytes` of events in memory."""
    base = Path(root)
    spool = Spool(
        base / "spool.db",
        node_id="worker-test",
        durability=durability,
        max_file_bytes=384 << 10,
        reserve_bytes=64 << 10,
        max_memory_bytes=memory_bytes,
        block_timeout=5,
    )
    spool.retry_interval = 0.05
    pipeline = Pipeline(spool)
    exporter = pipeline.add_exporter(
        ExporterConfig(name="default", flush_interval=0.05), _StoreThatStops(base / "objects")
    )
    exporter.backoff_base = exporter.backoff_max = 0.05
    return pipeline


class SpooledEvents:
    """An `AuditWorker` spooling into a temporary directory, and the events in its
    spool read from this process like a `MemorySink`'s: `events`, and
    `wait_for(count)`. Give `worker` to the interceptor, then `attach` the interceptor,
    whose captures are flushed (and the worker's spool committed) before each read."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="auditline-worker-")
        self._path = Path(self._dir.name) / "spool.db"
        self.worker = AuditWorker(functools.partial(spool_only, self._dir.name))
        self._interceptor: Any = None
        self._kept: list[event_pb2.ApiEvent] | None = None

    def attach(self, interceptor: Any) -> None:
        self._interceptor = interceptor

    def flush(self, timeout: float = 10.0) -> bool:
        """Every event of the calls finished so far is committed in the spool."""
        if self._interceptor is not None and not self._interceptor.flush(timeout):
            return False
        return self.worker.flush(timeout)

    def close(self) -> None:
        """Stop the worker (after the interceptor) and remove its directory; `events`
        stay as they were then."""
        self.worker.close()
        self._kept = self._read()
        self._dir.cleanup()

    @property
    def events(self) -> list[event_pb2.ApiEvent]:
        if self._kept is not None:
            return list(self._kept)
        assert self.flush(), "the audit worker did not commit in time"
        return self._read()

    def _read(self) -> list[event_pb2.ApiEvent]:
        if not self._path.exists():
            return []
        with contextlib.closing(sqlite3.connect(f"file:{self._path}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT seq, at_ns, end_ns, log_type, body FROM events ORDER BY seq"
            ).fetchall()
        return [SpooledEvent(*row).event() for row in rows]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[event_pb2.ApiEvent]:
        """Wait until at least `count` events are in the spool; return them all."""

        def arrived() -> list[event_pb2.ApiEvent] | None:
            events = self.events
            return events if len(events) >= count else None

        return wait_for(arrived, timeout=timeout, what=f"{count} audit events", interval=0.01)


def spool_in_use(root: str) -> Pipeline:
    """A spool another process holds (a second server on one data directory)."""
    raise SpoolInUseError(f"the audit spool {root} is in use by another process")
