"""The interceptor library's own pipeline, as an embedding service wires it: a spool,
exporters writing to a directory or an S3 bucket, closed in the order that loses
nothing; and the caller's address as a service's own decisions must see it."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import stat
import threading
import uuid
from pathlib import Path

import grpc
import pytest
from auditline_testing.v1 import echo_pb2, echo_pb2_grpc

from auditline.audit.v1 import event_pb2
from auditline.interceptor import (
    AuditInterceptor,
    AuditWorker,
    DirectoryWriter,
    Exporter,
    ExporterConfig,
    Pipeline,
    S3Writer,
    Spool,
    TrustedProxies,
    open_writer,
    read_exported,
)
from auditline.interceptor.integrity import Notary, SigningKey, Verifier, open_location
from tests.interceptor.harness import MODES
from tests.support.echo import SyncServer
from tests.support.exported import read_lines
from tests.support.seaweedfs import SeaweedFS
from tests.support.worker_pipelines import signed_directory


def _exported(location: str) -> list[dict[str, object]]:
    reader = open_location(location)
    return [
        record
        for key in reader.list_keys()
        if key.startswith("apievent/")
        for record in read_lines(key, reader.read(key) or b"")
    ]


@pytest.mark.parametrize("mode", MODES)
def test_closing_the_pipeline_exports_every_finished_call(tmp_path: Path, mode: str) -> None:
    """Calls finished just before shutdown are in the files, and the log verifies: the
    pipeline drains the interceptor into the spool before the exporters' last file. With
    an audit worker: the interceptor, then the worker (whose pipeline closes last)."""
    key = SigningKey.generate("test/n1")
    if mode == "worker":
        worker = AuditWorker(functools.partial(signed_directory, str(tmp_path), key.text, "n1"))
        audit = AuditInterceptor(worker, node_id="n1")

        def close() -> None:
            audit.close()
            worker.close()

    else:
        spool = Spool(tmp_path / "spool.db", node_id="n1")  # async: events wait in memory
        audit = AuditInterceptor(spool, node_id="n1")
        pipeline = Pipeline(
            spool, interceptors=[audit], notary=Notary(key=key, origin="test/n1", node_id="n1")
        )
        # An interval no test waits for: only close() can write these files.
        pipeline.add_exporter(
            ExporterConfig(name="files", flush_interval=3600), DirectoryWriter(tmp_path / "log")
        )
        close = pipeline.close
    server = SyncServer([audit])
    calls = 4 * 25

    def client() -> None:
        with grpc.insecure_channel(server.target) as channel:
            stub = echo_pb2_grpc.EchoServiceStub(channel)
            for _ in range(25):
                stub.Echo(echo_pb2.EchoRequest(text="hi"), timeout=30)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    server.stop()
    close()

    records = _exported(str(tmp_path / "log"))
    assert len(records) == calls
    sequences = sorted(int(r["ApiEvent"]["Sequence"]) for r in records)  # type: ignore[index]
    assert sequences == list(range(1, calls + 1))  # gap-free: nothing lost, nothing twice
    report = Verifier(open_location(str(tmp_path / "log")), [key.verifier]).run()
    assert report.ok, report.findings
    assert report.events == calls
    close()  # a second close is harmless
    if mode == "worker":
        return
    with pytest.raises(RuntimeError):
        pipeline.add_exporter(ExporterConfig(name="late"), DirectoryWriter(tmp_path / "late"))


def test_an_exporter_added_again_resumes_where_it_stopped(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", node_id="n1")
    pipeline = Pipeline(spool)
    writer = DirectoryWriter(tmp_path / "log")
    config = ExporterConfig(name="files", flush_interval=3600)
    first = pipeline.add_exporter(config, writer)
    for name in ("a", "b"):
        _emit(spool, name)
    assert first.flush(30)
    second = pipeline.add_exporter(config, writer)  # restarted, as a changed exporter is
    assert second is not first
    assert pipeline.exporters["files"] is second
    _emit(spool, "c")
    pipeline.close()
    names = [r["ApiEvent"]["EventName"] for r in _exported(str(tmp_path / "log"))]  # type: ignore[index]
    assert sorted(names) == ["a", "b", "c"]  # each once


class _HeldWriter(DirectoryWriter):
    """Its first put waits to be let go: a store that hangs under an exporter."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.holding = threading.Event()
        self.release = threading.Event()

    def put(
        self, key: str, data: bytes, *, retain_until: datetime.datetime | None, mode: str | None
    ) -> None:
        if not self.holding.is_set() and "/integrity/" not in f"/{key}":
            self.holding.set()
            assert self.release.wait(30)
        super().put(key, data, retain_until=retain_until, mode=mode)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _StuckExporter:
    key: SigningKey
    spool: Spool
    pipeline: Pipeline
    writer: _HeldWriter
    config: ExporterConfig
    exporter: Exporter


def _stuck_exporter(root: Path) -> _StuckExporter:
    """A pipeline whose exporter "files" is inside its first batch (events a and b),
    its store hanging until `writer.release` is set."""
    key = SigningKey.generate("test/n1")
    spool = Spool(root.parent / "spool.db", node_id="n1")
    pipeline = Pipeline(spool, notary=Notary(key=key, origin="test/n1", node_id="n1"))
    writer = _HeldWriter(root)
    config = ExporterConfig(name="files", flush_interval=3600)
    exporter = pipeline.add_exporter(config, writer)
    for name in ("a", "b"):
        _emit(spool, name)
    assert not exporter.flush(0.1)
    assert writer.holding.wait(30)  # the exporter is inside its batch
    return _StuckExporter(
        key=key, spool=spool, pipeline=pipeline, writer=writer, config=config, exporter=exporter
    )


def test_a_replaced_exporter_ends_its_batch_before_the_next_one_starts(tmp_path: Path) -> None:
    """Changing an exporter while its store hangs: the old one's late batch and the
    new one's must not overlap, nor its late commit move the watermark back."""
    stuck = _stuck_exporter(tmp_path / "log")
    stuck.pipeline.remove_exporter("files", timeout=0.1)
    assert stuck.exporter.running
    new = stuck.pipeline.add_exporter(stuck.config, stuck.writer)
    for name in ("c", "d"):
        _emit(stuck.spool, name)
    assert not new.flush(0.5)  # it waits for the old one
    assert stuck.spool.store.watermark("files") == 0
    stuck.writer.release.set()
    assert new.flush(30)
    assert not stuck.exporter.running
    stuck.pipeline.close()
    location = open_location(str(tmp_path / "log"))
    assert sorted(e.document["EventName"] for e in read_exported(location)) == ["a", "b", "c", "d"]
    report = Verifier(location, [stuck.key.verifier]).run()
    assert report.findings == []


def test_an_exporter_deleted_mid_batch_and_made_again_starts_afresh(tmp_path: Path) -> None:
    """An exporter's definition deleted while its store hangs, and one of the same name
    made at once: the old one's late batch commits into its own watermark, which is
    then dropped; the new one starts at the oldest event kept, into its own place."""
    stuck = _stuck_exporter(tmp_path / "old")
    stuck.pipeline.remove_exporter("files", timeout=0.1, forget=True)
    new = stuck.pipeline.add_exporter(stuck.config, DirectoryWriter(tmp_path / "new"))
    for name in ("c", "d"):
        _emit(stuck.spool, name)
    stuck.writer.release.set()
    assert new.flush(30)
    stuck.pipeline.close()
    old_log, new_log = open_location(str(tmp_path / "old")), open_location(str(tmp_path / "new"))
    assert [e.document["EventName"] for e in read_exported(old_log)] == ["a", "b"]
    assert Verifier(old_log, [stuck.key.verifier]).run().findings == []
    assert [e.document["EventName"] for e in read_exported(new_log)] == ["c", "d"]
    # It began after 1..2 were exported elsewhere and freed, and its first manifest
    # says so (until 2026-12-07 the name's old log was taken for its own: "cut").
    report = Verifier(new_log, [stuck.key.verifier]).run()
    assert report.findings == []
    assert report.nodes[0].first_seq == 3


def test_an_exporter_replaced_while_it_waits_for_the_one_it_replaced(tmp_path: Path) -> None:
    """Deleted mid-batch, made again, and changed at once (a second replacement while
    the first still waited): the third waits for the first's batch too. It began at
    once, and the first, told to forget, deleted its watermark as it ended: it never
    committed again, and its events were freed unexported."""
    stuck = _stuck_exporter(tmp_path / "old")
    stuck.pipeline.remove_exporter("files", timeout=0.1, forget=True)
    stuck.pipeline.add_exporter(stuck.config, DirectoryWriter(tmp_path / "new"))
    third = stuck.pipeline.add_exporter(stuck.config, DirectoryWriter(tmp_path / "new"))
    for name in ("c", "d"):
        _emit(stuck.spool, name)
    assert not third.flush(0.5)  # it waits for the first
    stuck.writer.release.set()
    assert third.flush(30)
    for name in ("e", "f"):
        _emit(stuck.spool, name)
    assert third.flush(30)
    assert third.status.errors == 0
    stuck.pipeline.close()
    new_log = open_location(str(tmp_path / "new"))
    assert [e.document["EventName"] for e in read_exported(new_log)] == ["c", "d", "e", "f"]
    assert Verifier(new_log, [stuck.key.verifier]).run().findings == []


def _emit(spool: Spool, name: str) -> None:
    event = event_pb2.ApiEvent(event_name=name, version="2")
    event.request.request_time.GetCurrentTime()
    event.response.response_time.GetCurrentTime()
    spool.emit(event)
    assert spool.flush(10)


def test_a_directory_keeps_a_written_key_and_stays_inside(tmp_path: Path) -> None:
    writer = open_writer(str(tmp_path / "log"))
    assert isinstance(writer, DirectoryWriter)
    writer.put("a/b.jsonl.gz", b"first", retain_until=None, mode=None)
    writer.put("a/b.jsonl.gz", b"first", retain_until=None, mode=None)  # a retry: done
    with pytest.raises(FileExistsError):
        writer.put("a/b.jsonl.gz", b"other", retain_until=None, mode=None)
    written = tmp_path / "log" / "a" / "b.jsonl.gz"
    assert written.read_bytes() == b"first"
    assert not os.stat(written).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    with pytest.raises(ValueError, match="leaves the directory"):
        writer.put("../outside", b"x", retain_until=None, mode=None)
    assert not (tmp_path / "outside").exists()
    assert sorted(p.name for p in written.parent.iterdir()) == ["b.jsonl.gz"]  # no temp left


def test_s3_writer_locks_objects_and_verify_reads_them_back(
    seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    bucket = f"embed-{uuid.uuid4().hex[:12]}"
    client = seaweedfs.client()
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    url = f"s3://{bucket}/audit?endpoint={seaweedfs.endpoint}&region={seaweedfs.region}"
    writer = open_writer(url)
    assert isinstance(writer, S3Writer)
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    writer.put("x/one.jsonl", b'{"a":1}\n', retain_until=until, mode="GOVERNANCE")
    retention = client.get_object_retention(Bucket=bucket, Key="audit/x/one.jsonl")
    assert retention["Retention"]["Mode"] == "GOVERNANCE"
    assert writer.exists("x/one.jsonl")  # under the URL's prefix
    assert not writer.exists("x/two.jsonl")
    location = open_location(url)
    assert list(location.list_keys()) == ["x/one.jsonl"]
    assert location.read("x/one.jsonl") == b'{"a":1}\n'
    with pytest.raises(Exception, match="NoSuchBucket"):
        open_writer(f"s3://no-such-{bucket}?endpoint={seaweedfs.endpoint}")


def test_the_caller_behind_a_trusted_proxy_is_the_forwarded_client() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    forwarded = [("x-forwarded-for", "203.0.113.7, 10.1.2.3")]
    assert proxies.caller("ipv4:10.0.0.1:5555", forwarded) == ("203.0.113.7", 0)
    # From an untrusted peer the header is the client's own claim: ignored.
    assert proxies.caller("ipv4:198.51.100.1:5555", forwarded) == ("198.51.100.1", 5555)
    assert TrustedProxies().caller("ipv6:[::1]:7", forwarded) == ("::1", 7)


def test_hive_partitioned_keys_are_read_back_and_verify(tmp_path: Path) -> None:
    key = SigningKey.generate("test/n1")
    spool = Spool(tmp_path / "spool.db", node_id="n1")
    pipeline = Pipeline(spool, notary=Notary(key=key, origin="test/n1", node_id="n1"))
    pipeline.add_exporter(
        ExporterConfig(name="lake", flush_interval=3600, partitioning="hive"),
        DirectoryWriter(tmp_path / "log"),
    )
    for name in ("a", "b"):
        _emit(spool, name)
    pipeline.close()
    data = [p for p in (tmp_path / "log").rglob("*.jsonl.gz")]
    assert len(data) == 1
    parts = data[0].relative_to(tmp_path / "log").parts
    assert parts[0:2] == ("apievent", "account_api")
    assert [p.split("=")[0] for p in parts[2:5]] == ["year", "month", "day"]
    location = open_location(str(tmp_path / "log"))
    assert [e.document["EventName"] for e in read_exported(location)] == ["a", "b"]
    assert Verifier(location, [key.verifier]).run().ok
    with pytest.raises(ValueError, match="partitioning"):
        ExporterConfig(name="x", partitioning="weekly")


def test_a_directory_syncs_a_file_and_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once `put` returns, the exporter frees the file's events: the bytes and the
    # directory entry must both be on disk.
    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    DirectoryWriter(tmp_path / "log").put("a/b.jsonl.gz", b"x", retain_until=None, mode=None)
    # log/ and log/a/ made, each synced into its parent; the file; its name.
    assert synced == [True, True, False, True]
