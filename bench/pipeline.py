"""Export pipeline speed: `python -m bench.pipeline`.

1. Per format x compression, on one core: events per second through render +
   encode (compress, or Parquet) + write, to the filesystem and to SeaweedFS
   (started here on loopback), and the bytes per event of the files.
2. The server's throughput with the whole pipeline running (interceptor, spool,
   exporter to the filesystem), in async and sync durability, against the bare
   server measured in the same run (the load of `bench.interceptor`).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from auditline.audit.v1 import event_pb2, options_pb2
from auditline.interceptor import Exporter, ExporterConfig, Spool
from auditline.interceptor._compression import COMPRESSIONS
from auditline.interceptor._export import encode_file
from auditline.interceptor._formats import FORMATS as FORMATS_BY_NAME
from auditline.interceptor._record import EventIds
from auditline.server.audit_target import BucketWriter
from auditline.server.objectstore import FilesystemStore, ObjectStore
from auditline.server.s3_store import S3Store
from bench import interceptor as server_bench
from bench import load, servers

FORMATS = tuple(FORMATS_BY_NAME)


_IDS = EventIds()


def _event(i: int) -> event_pb2.ApiEvent:
    """An event as the interceptor makes them for CreateBucket (its ids too: a
    process's ids share a prefix and count up, which keeps the spool's index on them
    cheap to add to and delete from, where random ids would touch a page each)."""
    now = time.time_ns()
    event = event_pb2.ApiEvent(
        event_name="CreateBucket",
        version="2",
        event_id=_IDS.next(),
        node_id="bench",
        service="auditline.account.v1.BucketService",
        method="CreateBucket",
        activity=options_pb2.ACTIVITY_CREATE,
        log_type=event_pb2.LOG_TYPE_ACCOUNT_API,
    )
    request = event.request
    request.account_name, request.access_key = "admin", "AKBENCH0000000000000"
    request.source_ip, request.source_port = "10.1.2.3", 50000 + i % 10000
    request.user_agent = "grpc-python/1.85.1 grpc-c/58.0.0 (linux; chttp2)"
    request.message_count = 1
    request.request_time.FromNanoseconds(now)
    request.request_params.update(
        {
            "bucket_id": f"logs-{i}",
            "immutable": True,
            "default_retention": {"mode": "RETENTION_MODE_COMPLIANCE", "days": 30},
        }
    )
    response = event.response
    response.response_time.FromNanoseconds(now + 2_000_000)
    response.response_status = "OK"
    response.message_count = 1
    response.response_body.update(
        {
            "bucket": {
                "name": f"buckets/logs-{i}",
                "immutable": True,
                "create_time": "2026-11-22T12:00:00Z",
            }
        }
    )
    return event


def export_rate(
    store: ObjectStore, bucket: str, events: int, fmt: str, compression: str, workdir: Path
) -> tuple[float, float, float]:
    """(render+compress+write events/s, whole-exporter events/s, bytes/event)."""
    spool = Spool(workdir / f"{uuid.uuid4().hex}.db", node_id="bench")
    for i in range(events):
        spool.emit(_event(i))
    spool.flush(60)
    config = ExporterConfig(
        name="bench",
        format=fmt,
        compression=compression,
        lake_region="us-east-1",
        lake_account_id="123456789012",
    )
    exporter = Exporter(
        config,
        spool,
        BucketWriter(store, bucket),
        node_id="bench",
    )
    spooled = spool.store.read(0, limit=events)
    render = FORMATS_BY_NAME[fmt]
    writer = BucketWriter(store, bucket)
    # Render + encode + write alone, file by file, on events read beforehand. Each
    # timing starts with no garbage left by what came before it (the spool's filling
    # left enough for a collection that cost a run up to a third of its time).
    gc.collect()
    started = time.process_time()
    for first in range(0, len(spooled), 2400):
        chunk = spooled[first : first + 2400]
        lines = [render(e.body, e.at_ns, e.end_ns, e.log_type, config.ocsf_version) for e in chunk]
        body = encode_file(config, lines)
        writer.put(f"rcw/{first}", body, retain_until=None, mode=None)
    render_cpu = time.process_time() - started
    # The whole exporter: also reading the spool, recording files, freeing events.
    gc.collect()
    started = time.process_time()
    while exporter.export_once():
        pass
    cpu = time.process_time() - started
    size = sum(f.bytes for _, f in spool.store.files())
    spool.close()
    return events / max(render_cpu, 1e-9), events / max(cpu, 1e-9), size / events


def _export_table(events: int, seaweedfs: bool) -> None:
    """Part 1: each format x compression x store, on one core."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        stores: dict[str, ObjectStore] = {"filesystem": FilesystemStore(workdir / "objects")}
        seaweed = None
        if seaweedfs:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.support.seaweedfs import SeaweedFS

            seaweed = SeaweedFS(workdir / "seaweedfs")
            # On the other core, as a store is elsewhere: the exporter's core is its
            # own. (The runs' spread came from garbage collections, not from this.)
            servers.pin(1)
            try:
                seaweed.start()
            finally:
                servers.pin(0)
            stores["SeaweedFS"] = S3Store(client=seaweed.client())
        try:
            print(f"\nrender + encode + write, {events:,} CreateBucket events, one core\n")
            print(
                "| format | compression | store | render+encode+write events/s "
                "| whole exporter events/s | bytes/event |"
            )
            print("| --- | --- | --- | ---: | ---: | ---: |")
            for fmt in FORMATS:
                for compression in COMPRESSIONS:
                    for store_name, store in stores.items():
                        bucket = f"b-{uuid.uuid4().hex[:12]}"
                        store.create_bucket(bucket, object_lock=False)
                        rate, whole, per_event = export_rate(
                            store, bucket, events, fmt, compression, workdir
                        )
                        print(
                            f"| {fmt} | {compression} | {store_name} | {rate:,.0f} "
                            f"| {whole:,.0f} | {per_event:.0f} |",
                            flush=True,
                        )
        finally:
            if seaweed is not None:
                seaweed.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-seaweedfs", action="store_true")
    parser.add_argument("--no-server", action="store_true")
    parser.add_argument("--no-export", action="store_true", help="only the servers' table")
    parser.add_argument("--unpinned", action="store_true", help="let every process run anywhere")
    parser.add_argument(
        "--server", choices=servers.SERVERS, default="sync", help="thread pool or asyncio server"
    )
    server_bench.add_threads_argument(parser)
    args = parser.parse_args(argv)
    if args.unpinned:
        os.environ[servers.UNPINNED] = "1"
    server_bench.use_threads_argument(parser, args)
    servers.pin(0)

    if not args.no_export:
        _export_table(args.events, seaweedfs=not args.no_seaweedfs)
    if not args.no_server:
        modes = ("bare", *servers.PIPELINE_MODES)
        generator = load.load_generator("auto")
        runs = server_bench.measure(
            modes, args.seconds, args.rounds, 16, 1.0, server_kind=args.server, generator=generator
        )
        print(
            f"\nwhole pipeline, unary Authenticate, {server_bench.server_name(args.server)} "
            f"({generator} load), "
            f"{args.seconds:g}s x {args.rounds} rounds, "
            f"median; {server_bench.cores_note()}\n"
        )
        print("\n".join(server_bench.table(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
