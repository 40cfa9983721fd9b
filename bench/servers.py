"""The server process of `bench.interceptor` and `bench.pipeline`: one unary service
(AuthService/Authenticate, whose request and response carry secrets to redact) on a
sync (thread pool) or asyncio gRPC server, audited as its mode says, with a control
method the load process reads CPU figures from."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import wrappers_pb2

from auditline.account.v1 import auth_pb2
from bench import probes

MODES = ("bare", "auditline", "auditline-worker", "otel")
# Also served (for bench.pipeline): the interceptor with the spool and an exporter, in
# the serving process or in an audit worker.
PIPELINE_MODES = (
    "pipeline-async",
    "pipeline-sync",
    "pipeline-async-worker",
    "pipeline-sync-worker",
)
SERVERS = ("sync", "aio")
UNPINNED = "AUDITLINE_BENCH_UNPINNED"
CPUS = "AUDITLINE_BENCH_CPUS"  # the cores `pin` chooses from
THREADS = "AUDITLINE_BENCH_THREADS"  # the sync server's pool threads (`pool_threads`)
# Set: the exporters' object store refuses every write (the backlog grows in the spool).
STORE_DOWN = "AUDITLINE_BENCH_STORE_DOWN"
METHOD = "/auditline.account.v1.AuthService/Authenticate"
STATS = "/bench.Control/Stats"


# What the load processes send, and how they reach the service and the control method.
REQUEST = auth_pb2.AuthenticateRequest(access_key="AKBENCH", secret_key="s" * 43)


def load_calls(channel: grpc.aio.Channel) -> tuple[Any, Any]:
    """The service's method and the control method (`Stats`), on a load's channel."""
    call = channel.unary_unary(
        METHOD,
        request_serializer=auth_pb2.AuthenticateRequest.SerializeToString,
        response_deserializer=auth_pb2.AuthenticateResponse.FromString,
    )
    stats_call = channel.unary_unary(
        STATS,
        request_serializer=wrappers_pb2.StringValue.SerializeToString,
        response_deserializer=wrappers_pb2.StringValue.FromString,
    )
    return call, stats_call


class _CountingSink:
    """Counts events. It takes them as documents, as the spool does (a sink with only
    `emit` gets each as an `ApiEvent` message parsed from its document: ~70 us more)."""

    def __init__(self) -> None:
        self.count = 0

    def emit(self, event: Any) -> None:
        self.count += 1

    def emit_documents(self, documents: Any, *, wait: bool) -> None:
        self.count += len(documents)


# Calls the service answered (next() of a count is atomic under the GIL; each read
# takes one, which `Stats` subtracts).
_HANDLED = itertools.count()
_READS = itertools.count(1)


def _authenticate(
    request: auth_pb2.AuthenticateRequest, context: grpc.ServicerContext
) -> auth_pb2.AuthenticateResponse:
    next(_HANDLED)
    response = auth_pb2.AuthenticateResponse(
        token="tok-" + request.access_key, service_account="serviceAccounts/bench"
    )
    response.expire_time.FromSeconds(2_000_000_000)
    return response


def pool_threads() -> int:
    """The sync server's pool threads: 8, or as `--server-threads` said (a fail-closed
    call holds one while it waits for its commit)."""
    return int(os.environ.get(THREADS, "8"))


def pin(cpu: int) -> None:
    """Server on one core, load on the other: less noise on a small machine.

    The cores are chosen from those of the first process that pinned (passed on in
    the environment): a process started by a pinned one (the audit worker, by the
    server) inherits its single core, and would otherwise stay there."""
    if os.environ.get(UNPINNED):
        return
    if CPUS not in os.environ:
        os.environ[CPUS] = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    cpus = [int(c) for c in os.environ[CPUS].split(",")]
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


class _StoreDown:
    def put(self, key: str, data: bytes, **options: Any) -> None:
        raise ConnectionError("the object store is down")


def _writer(workdir: str) -> Any:
    """Where the exporter writes: a directory, or (`STORE_DOWN`) a store that refuses."""
    from auditline.interceptor import DirectoryWriter

    return _StoreDown() if os.environ.get(STORE_DOWN) else DirectoryWriter(Path(workdir) / "o")


def worker_pipeline(workdir: str, durability: str, export: bool) -> Any:
    """The audit worker's pipeline (made in the worker process, on the load's core)."""
    from auditline.interceptor import ExporterConfig, Pipeline, Spool

    pin(1)
    pipeline = Pipeline(Spool(Path(workdir) / "spool.db", node_id="bench", durability=durability))
    if export:
        pipeline.add_exporter(ExporterConfig(name="default"), _writer(workdir))
    return pipeline


def _rss(pid: int | None) -> int:
    """Resident set size of a process, in bytes (0 when there is none)."""
    if pid is None:
        return 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _disk_bytes(workdir: str) -> int:
    """The spool's database and its WAL (not its fixed disk reserve)."""
    if not workdir:
        return 0
    return sum(p.stat().st_size for p in Path(workdir).glob("spool.db*") if p.suffix != ".reserve")


def _stat_cpu(stat: Path) -> float:
    """CPU seconds (user + system) in a /proc `stat` file (a process's or a thread's)."""
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thread_cpu() -> dict[str, float]:
    """This process's CPU seconds per thread, grouped by name (a pool's threads
    together; gRPC's native threads by their kernel name)."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    groups: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = names.get(int(task.name)) or (task / "comm").read_text().strip()
            cpu = _stat_cpu(task / "stat")
        except OSError:
            continue  # the thread ended meanwhile
        group = re.sub(r"_\d+$", "", name)
        groups[group] = groups.get(group, 0.0) + cpu
    return groups


def _process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of another process, from /proc."""
    if pid is None:
        return 0.0
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Audit:
    """What a mode puts in front of the service, and how its deferred work is flushed."""

    interceptors: list[Any]
    flush: Callable[[], object]
    events: _CountingSink
    worker: Any = None  # the AuditWorker, when the mode has one
    workdir: str = ""  # where the spool is, when the mode has one


def _audit(mode: str, aio: bool) -> _Audit:
    events = _CountingSink()
    if mode in probes.PROBES:
        if aio:
            raise ValueError("the probes cut the sync server's audit path")
        probes.apply(mode)
        mode = probes.PROBED_MODE
    if mode == "bare":
        return _Audit(interceptors=[], flush=lambda: None, events=events)
    if mode == "otel":
        return _otel(aio, events)
    from auditline.interceptor import AsyncAuditInterceptor, AuditInterceptor

    interceptor_class = AsyncAuditInterceptor if aio else AuditInterceptor
    sync = mode.startswith("pipeline-sync")
    options: dict[str, Any] = {"hmac_key": b"bench-key" * 4, "node_id": "bench"}
    workdir = tempfile.mkdtemp(prefix="auditline-bench-")
    if mode.endswith("-worker"):
        from auditline.interceptor import AuditWorker

        worker = AuditWorker(
            functools.partial(
                worker_pipeline,
                workdir,
                "sync" if sync else "async",
                mode.startswith("pipeline-"),
            )
        )
        audit = interceptor_class(worker, fail_closed=sync, **options)

        def flush_worker() -> None:
            audit.flush()
            worker.flush()

        return _Audit(
            interceptors=[audit], flush=flush_worker, events=events, worker=worker, workdir=workdir
        )
    if mode == "auditline":
        audit = interceptor_class(events, **options)
        return _Audit(interceptors=[audit], flush=audit.flush, events=events)
    from auditline.interceptor import Exporter, ExporterConfig, Spool

    spool = Spool(
        Path(workdir) / "spool.db", node_id="bench", durability="sync" if sync else "async"
    )
    Exporter(
        ExporterConfig(name="default"),
        spool,
        _writer(workdir),
        node_id="bench",
    ).start()
    audit = interceptor_class(spool, fail_closed=sync, **options)

    def flush_pipeline() -> None:
        audit.flush()
        spool.flush()

    return _Audit(interceptors=[audit], flush=flush_pipeline, events=events, workdir=workdir)


def _otel(aio: bool, events: _CountingSink) -> _Audit:
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, server_interceptor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            events.count += len(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    make = aio_server_interceptor if aio else server_interceptor
    interceptor = make(tracer_provider=provider)  # type: ignore[no-untyped-call]
    return _Audit(interceptors=[interceptor], flush=provider.force_flush, events=events)


def _handlers(audit: _Audit, aio: bool) -> list[grpc.GenericRpcHandler]:
    """The service and the control method; coroutines on the asyncio server (grpc.aio
    would hand plain functions to a thread pool, a thread switch per call)."""

    def stats(request: wrappers_pb2.StringValue, context: Any) -> wrappers_pb2.StringValue:
        audit.flush()
        core = getattr(audit.interceptors[0], "_core", None) if audit.interceptors else None
        worker = audit.worker
        return wrappers_pb2.StringValue(
            value=json.dumps(
                {
                    "cpu": time.process_time(),
                    "handled": next(_HANDLED) - next(_READS),
                    "worker_process_cpu": _process_cpu(worker.pid if worker else None),
                    "events": audit.events.count,
                    "worker_cpu": core.worker_cpu_seconds if core is not None else 0.0,
                    "rss": _rss(os.getpid()),
                    "worker_rss": _rss(worker.pid if worker else None),
                    "spool_bytes": _disk_bytes(audit.workdir),
                    "threads": _thread_cpu(),
                }
            )
        )

    authenticate: Any = _authenticate
    if aio:

        async def authenticate(request: Any, context: Any) -> Any:
            return _authenticate(request, context)

        async def stats_async(request: Any, context: Any) -> Any:
            return stats(request, context)

    return [
        grpc.method_handlers_generic_handler(
            "auditline.account.v1.AuthService",
            {
                "Authenticate": grpc.unary_unary_rpc_method_handler(
                    authenticate,
                    request_deserializer=auth_pb2.AuthenticateRequest.FromString,
                    response_serializer=auth_pb2.AuthenticateResponse.SerializeToString,
                ),
            },
        ),
        grpc.method_handlers_generic_handler(
            "bench.Control",
            {
                "Stats": grpc.unary_unary_rpc_method_handler(
                    stats_async if aio else stats,
                    request_deserializer=wrappers_pb2.StringValue.FromString,
                    response_serializer=wrappers_pb2.StringValue.SerializeToString,
                ),
            },
        ),
    ]


def serve(mode: str, server_kind: str, port_file: Path) -> None:
    """Serve until killed; write the port to `port_file` once serving."""
    pin(0)
    aio = server_kind == "aio"
    audit = _audit(mode, aio)
    if not aio:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=pool_threads()), interceptors=audit.interceptors
        )
        server.add_generic_rpc_handlers(_handlers(audit, aio=False))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        port_file.write_text(str(port))
        threading.Event().wait()
        return

    async def run() -> None:
        # Coroutine handlers, as an asyncio service has: grpc.aio runs plain functions
        # in a thread of the loop's executor, bare or not. (Until 2026-12-07 the
        # handlers here were plain functions, which the asyncio interceptor ran on the
        # event loop: the audited servers were spared the bare one's thread switch,
        # and their ratios were too high.)
        aio_server = grpc.aio.server(interceptors=audit.interceptors)
        aio_server.add_generic_rpc_handlers(_handlers(audit, aio=True))
        port = aio_server.add_insecure_port("127.0.0.1:0")
        await aio_server.start()
        port_file.write_text(str(port))
        await aio_server.wait_for_termination()

    asyncio.run(run())
