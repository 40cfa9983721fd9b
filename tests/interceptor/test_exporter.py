"""Exporters against an in-memory writer: several per spool, retries, metrics."""

from __future__ import annotations

import datetime
import gzip
import json
import threading
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from auditline.audit.v1 import event_pb2
from auditline.interceptor import (
    DirectoryWriter,
    Exporter,
    ExporterConfig,
    ExporterState,
    Spool,
    instrument,
)
from auditline.interceptor.integrity import Notary, SigningKey
from tests.support.exported import event_of, read_lines


class MemoryWriter:
    def __init__(self, failures: int = 0) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts: list[str] = []
        self.failures = failures
        self.lock = threading.Lock()

    def put(
        self, key: str, data: bytes, *, retain_until: datetime.datetime | None, mode: str | None
    ) -> None:
        with self.lock:
            self.puts.append(key)
            if self.failures:
                self.failures -= 1
                raise ConnectionError("the object store is down")
            self.objects[key] = data


def _fill(
    spool: Spool,
    count: int,
    log_type: int = event_pb2.LOG_TYPE_ACCOUNT_API,
    *,
    at_ns: int = 1_800_000_000_000_000_000,  # a fixed day (2027-01-15), for the keys
) -> None:
    for i in range(count):
        event = event_pb2.ApiEvent(event_name=f"Call{i}", version="2", log_type=log_type)  # type: ignore[arg-type]
        event.request.request_time.FromNanoseconds(at_ns + i)
        event.response.response_time.FromNanoseconds(at_ns + i)
        spool.emit(event)
    assert spool.flush(10)


def _sequences(writer: MemoryWriter, apievent: bool = True) -> list[int]:
    records = [r for key, data in writer.objects.items() for r in read_lines(key, data)]
    if apievent:
        return sorted(int(event_of(r)["Sequence"]) for r in records)
    return sorted(r["metadata"]["sequence"] for r in records)


def test_two_exporters_read_the_same_spool_independently(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", node_id="n")
    a_writer, b_writer = MemoryWriter(), MemoryWriter()
    a = Exporter(ExporterConfig(name="a"), spool, a_writer, node_id="n")
    b = Exporter(
        ExporterConfig(name="b", format="ocsf-json", compression="none"),
        spool,
        b_writer,
        node_id="n",
    )
    _fill(spool, 50)
    _fill(spool, 5, event_pb2.LOG_TYPE_IAM)
    a.export_once()
    assert len(spool.store.read(0)) == 55  # b has not exported: nothing is freed
    b.export_once()
    assert spool.store.read(0) == []
    assert _sequences(a_writer) == list(range(1, 56))
    assert _sequences(b_writer, apievent=False) == list(range(1, 56))
    assert sorted(a_writer.objects) == [
        "apievent/account_api/2027/01/15/n-000000000001-000000000055.jsonl.gz",
        "apievent/iam/2027/01/15/n-000000000001-000000000055.jsonl.gz",
    ]
    files = spool.store.files("a")
    assert [(f.first_seq, f.last_seq, f.events) for _, f in files] == [(1, 50, 50), (51, 55, 5)]
    spool.close()


def test_files_are_cut_at_the_size_limit(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", node_id="n")
    writer = MemoryWriter()
    exporter = Exporter(
        ExporterConfig(name="a", compression="none", max_file_bytes=4096),
        spool,
        writer,
        node_id="n",
    )
    _fill(spool, 100)
    while exporter.export_once():
        pass
    assert len(writer.objects) > 1
    assert all(len(data) <= 4096 for data in writer.objects.values())
    assert _sequences(writer) == list(range(1, 101))
    spool.close()


def test_a_failed_upload_is_retried_under_the_same_key(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", node_id="n")
    writer = MemoryWriter(failures=1)
    exporter = Exporter(ExporterConfig(name="a"), spool, writer, node_id="n")
    _fill(spool, 10)
    with pytest.raises(ConnectionError):
        exporter.export_once()
    _fill(spool, 10)  # more events arrive meanwhile
    exporter.export_once()  # the retry uploads the same batch, under the same key
    exporter.export_once()
    assert writer.puts[0] == writer.puts[1]
    assert _sequences(writer) == list(range(1, 21))
    assert len(writer.objects) == 2
    spool.close()


def test_the_exporter_thread_reports_error_and_recovers(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", node_id="n")
    writer = MemoryWriter(failures=2)
    exporter = Exporter(ExporterConfig(name="a", flush_interval=0.05), spool, writer, node_id="n")
    exporter.backoff_base = 0.05
    states: list[ExporterState] = []
    _fill(spool, 5)
    exporter.start()
    assert exporter.flush(30)
    states.append(exporter.status.state)
    exporter.stop()
    assert exporter.status.errors == 2
    assert exporter.status.last_error_time > 0
    assert exporter.status.last_error == ""  # cleared by the success that followed
    assert states == [ExporterState.WAITING]
    assert _sequences(writer) == [1, 2, 3, 4, 5]
    spool.close()


def test_the_exporter_thread_outlives_a_thousand_failed_attempts(tmp_path: Path) -> None:
    # A store down long enough for over a thousand retries (17 hours at the default
    # 60 s ceiling) once overflowed the backoff and killed the thread.
    spool = Spool(tmp_path / "spool.db", node_id="n")
    writer = MemoryWriter(failures=1100)
    exporter = Exporter(ExporterConfig(name="a", flush_interval=0.05), spool, writer, node_id="n")
    exporter.backoff_base = exporter.backoff_max = 0.0
    _fill(spool, 3)
    exporter.start()
    assert exporter.flush(60)
    exporter.stop()
    assert exporter.status.errors == 1100
    assert _sequences(writer) == [1, 2, 3]
    spool.close()


def test_metrics(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    spool = Spool(tmp_path / "spool.db", node_id="n", max_bytes=1 << 20)
    writer = MemoryWriter()
    exporter = Exporter(ExporterConfig(name="a"), spool, writer, node_id="n")
    instrument(spool, lambda: [exporter], meter_provider=provider)
    _fill(spool, 7)
    exporter.export_once()
    data = reader.get_metrics_data()
    assert data is not None
    values = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                point = next(iter(metric.data.data_points))
                values[metric.name] = getattr(point, "value", None) or getattr(point, "count", 0)
    assert values["auditline.audit.events.accepted"] == 7
    assert values["auditline.audit.events.exported"] == 7
    assert values["auditline.audit.export.duration"] == 1
    assert "auditline.audit.spool.size" in values
    spool.close()


def test_exported_lines_are_json(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", node_id="n")
    writer = MemoryWriter()
    Exporter(ExporterConfig(name="a"), spool, writer, node_id="n")
    _fill(spool, 1)
    exporter = Exporter(ExporterConfig(name="b"), spool, writer, node_id="n")
    exporter.export_once()
    (data,) = writer.objects.values()
    (line,) = gzip.decompress(data).splitlines()
    assert json.loads(line)["ApiEvent"]["EventName"] == "Call0"
    spool.close()


def test_a_new_exporter_starts_at_the_oldest_kept_event_and_proves_it(tmp_path: Path) -> None:
    """Retained events outlive their tree nodes' pruning: a later exporter can still
    start at the oldest event kept, and its checkpoints verify."""
    from auditline.interceptor.integrity import LocalDirectory, Notary, SigningKey, Verifier

    key = SigningKey.generate("test/n")
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(tmp_path / "spool.db", node_id="n", retain_seconds=3600)
    first = Exporter(
        ExporterConfig(name="a"),
        spool,
        DirectoryWriter(tmp_path / "first"),
        node_id="n",
        notary=notary,
    )
    # Dated now: one dated ahead of the clock would not be kept for the window.
    _fill(spool, 37, at_ns=time.time_ns())
    while first.export_once():
        pass
    later = Exporter(
        ExporterConfig(name="b"),
        spool,
        DirectoryWriter(tmp_path / "later"),
        node_id="n",
        notary=notary,
    )
    _fill(spool, 5, at_ns=time.time_ns())
    while later.export_once():
        pass
    report = Verifier(LocalDirectory(tmp_path / "later"), [key.verifier]).run()
    assert report.findings == []
    assert report.nodes[0].first_seq == 1
    spool.close()


def test_a_file_holds_one_days_events(tmp_path: Path) -> None:
    """Files are cut at midnight UTC, so that the day a key names holds every event of
    the file (a query pruning by the key's day misses none)."""
    spool = Spool(tmp_path / "spool.db", node_id="n")
    midnight = 1_800_057_600 * 10**9  # 2027-01-16T00:00:00Z
    # The first file's first event 100 ns before midnight: a float's rounding of it
    # took the file to the next day's key.
    for at_ns in (midnight - 100, midnight - 50, midnight, midnight + 10**9):
        event = event_pb2.ApiEvent(event_name="Call", version="2")
        event.request.request_time.FromNanoseconds(at_ns)
        event.response.response_time.FromNanoseconds(at_ns)
        spool.emit(event)
    assert spool.flush(10)
    writer = MemoryWriter()
    exporter = Exporter(ExporterConfig(name="a", partitioning="hive"), spool, writer, node_id="n")
    while exporter.export_once():
        pass
    assert sorted(writer.objects) == [
        "apievent/account_api/year=2027/month=01/day=15/n-000000000001-000000000002.jsonl.gz",
        "apievent/account_api/year=2027/month=01/day=16/n-000000000003-000000000004.jsonl.gz",
    ]
    spool.close()


def test_numbers_never_go_back_after_a_restart(tmp_path: Path) -> None:
    """The last events were of a log this exporter leaves out: passed, freed, in no
    file. A restart must not number new events with theirs, or the new events would
    sit at or below the watermark (never exported) and the tree would prove others."""
    from auditline.interceptor.integrity import LocalDirectory, Notary, SigningKey, Verifier

    key = SigningKey.generate("test/n")
    notary = Notary(key=key, origin="test/n", node_id="n")
    config = ExporterConfig(name="a", log_types=frozenset({event_pb2.LOG_TYPE_ACCOUNT_API}))
    writer = DirectoryWriter(tmp_path / "out")
    spool = Spool(tmp_path / "spool.db", node_id="n")
    exporter = Exporter(config, spool, writer, node_id="n", notary=notary)
    _fill(spool, 2)
    _fill(spool, 1, event_pb2.LOG_TYPE_IAM)  # number 3, left out
    while exporter.export_once():
        pass
    spool.close()

    spool = Spool(tmp_path / "spool.db", node_id="n")
    assert spool.store.next_seq == 4
    exporter = Exporter(config, spool, writer, node_id="n", notary=notary)
    _fill(spool, 2)
    while exporter.export_once():
        pass
    spool.close()
    report = Verifier(LocalDirectory(tmp_path / "out"), [key.verifier]).run()
    assert report.findings == []
    lines = [
        r
        for path in sorted((tmp_path / "out").rglob("*.jsonl.gz"))
        for r in read_lines(path.name, path.read_bytes())
    ]
    assert sorted(int(event_of(r)["Sequence"]) for r in lines) == [1, 2, 4, 5]


def test_retained_events_a_new_exporter_still_needs_are_kept_for_it(tmp_path: Path) -> None:
    """A new exporter starts at the oldest event kept, below what every earlier one
    has passed: neither the spool's cap nor retention may delete what it has yet to
    export, or its log would have a hole no marker tells of."""
    from auditline.interceptor.integrity import LocalDirectory, Notary, SigningKey, Verifier

    key = SigningKey.generate("test/n")
    notary = Notary(key=key, origin="test/n", node_id="n")
    spool = Spool(tmp_path / "spool.db", node_id="n", retain_seconds=7 * 86400)
    first = Exporter(
        ExporterConfig(name="a"), spool, DirectoryWriter(tmp_path / "a"), node_id="n", notary=notary
    )
    _fill(spool, 40, at_ns=time.time_ns())  # now: in the window
    while first.export_once():
        pass
    later = Exporter(
        ExporterConfig(name="b", max_file_bytes=2048, compression="none"),
        spool,
        DirectoryWriter(tmp_path / "b"),
        node_id="n",
        notary=notary,
    )
    assert spool.store.retained_bytes == 0  # all pending again: b has yet to export them
    assert later.export_once()  # one small file, far from done
    spool.store.trim_retained(0)  # cap pressure: only what b has passed may go
    while later.export_once():
        pass
    report = Verifier(LocalDirectory(tmp_path / "b"), [key.verifier]).run()
    assert report.findings == []
    spool.close()


def test_the_verifier_key_is_locked_again_while_the_log_goes_on(tmp_path: Path) -> None:
    """The key was put once a run, locked for the retention from then: a node up for
    longer left it deletable while the files it verifies were still locked."""
    puts: list[tuple[str, datetime.datetime | None]] = []

    class Recording(MemoryWriter):
        def put(
            self,
            key: str,
            data: bytes,
            *,
            retain_until: datetime.datetime | None,
            mode: str | None,
        ) -> None:
            puts.append((key, retain_until))
            super().put(key, data, retain_until=retain_until, mode=mode)

    now = [1_000_000.0]
    spool = Spool(tmp_path / "spool.db", node_id="n")
    notary = Notary(key=SigningKey.generate("test/n"), origin="test/n", node_id="n")
    config = ExporterConfig(name="a", retention_mode="COMPLIANCE", retention_days=2)
    exporter = Exporter(
        config, spool, Recording(), node_id="n", notary=notary, clock=lambda: now[0]
    )

    def key_puts() -> int:
        _fill(spool, 3)
        exporter.export_once()
        return sum(key.startswith("integrity/keys/") for key, _ in puts)

    assert key_puts() == 1
    now[0] += 23 * 3600  # within a day: not again
    assert key_puts() == 1
    now[0] += 2 * 3600  # a day since: again, locked from now
    assert key_puts() == 2
    assert all(until is not None for key, until in puts if key.startswith("integrity/keys/"))
    spool.close()
