"""Interceptor overhead: `python -m bench.interceptor`.

Starts the same unary service (AuthService/Authenticate, whose request and
response carry secrets to redact) three ways, each in its own server process:

- `bare`: no interceptor (the baseline),
- `auditline`: `AuditInterceptor` with HMAC redaction, events built and handed
  to a sink that counts them,
- `otel`: OpenTelemetry's `opentelemetry-instrumentation-grpc` server
  interceptor with the SDK and a batch span processor (spans discarded).

A separate load process drives each with the same closed-loop load (N calls in
flight) for a fixed time. Server CPU is read inside the server after its
background work (event building, span export) has been flushed, so deferred
work is counted. Modes run interleaved for several rounds; the table shows the
median round, with ratios against `bare` measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import wrappers_pb2

from auditline.account.v1 import auth_pb2

MODES = ("bare", "auditline", "otel")
# Also served (for bench.pipeline): the interceptor with the spool and an exporter.
PIPELINE_MODES = ("pipeline-async", "pipeline-sync")
METHOD = "/auditline.account.v1.AuthService/Authenticate"
STATS = "/bench.Control/Stats"


# --- the server process -------------------------------------------------------


class _CountingSink:
    """Counts events. It takes them as documents, as the spool does (a sink with only
    `emit` gets each as an `ApiEvent` message parsed from its document: ~70 us more)."""

    def __init__(self) -> None:
        self.count = 0

    def emit(self, event: Any) -> None:
        self.count += 1

    def emit_documents(self, documents: Any, *, wait: bool) -> None:
        self.count += len(documents)


def _authenticate(
    request: auth_pb2.AuthenticateRequest, context: grpc.ServicerContext
) -> auth_pb2.AuthenticateResponse:
    response = auth_pb2.AuthenticateResponse(
        token="tok-" + request.access_key, service_account="serviceAccounts/bench"
    )
    response.expire_time.FromSeconds(2_000_000_000)
    return response


def _pin(cpu: int) -> None:
    """Server on one core, load on the other: less noise on a small machine."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


def serve(mode: str, port_file: Path) -> None:
    _pin(0)
    interceptors: list[Any] = []
    flush: Any = lambda: None  # noqa: E731
    events = _CountingSink()
    if mode == "auditline":
        from auditline.interceptor import AuditInterceptor

        audit = AuditInterceptor(events, hmac_key=b"bench-key" * 4, node_id="bench")
        interceptors.append(audit)
        flush = audit.flush
    elif mode in PIPELINE_MODES:
        from auditline.interceptor import (
            AuditInterceptor,
            DirectoryWriter,
            Exporter,
            ExporterConfig,
            Spool,
        )

        workdir = Path(tempfile.mkdtemp(prefix="auditline-bench-"))
        sync = mode == "pipeline-sync"
        spool = Spool(workdir / "spool.db", node_id="bench", durability="sync" if sync else "async")
        Exporter(
            ExporterConfig(name="default"),
            spool,
            DirectoryWriter(workdir / "objects"),
            node_id="bench",
        ).start()
        audit = AuditInterceptor(
            spool, hmac_key=b"bench-key" * 4, node_id="bench", fail_closed=sync
        )
        interceptors.append(audit)

        def flush_pipeline() -> None:
            audit.flush()
            spool.flush()

        flush = flush_pipeline
    elif mode == "otel":
        from opentelemetry.instrumentation.grpc import server_interceptor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Discard(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                events.count += len(spans)
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Discard()))
        interceptors.append(server_interceptor(tracer_provider=provider))  # type: ignore[no-untyped-call]
        flush = provider.force_flush

    def stats(
        request: wrappers_pb2.StringValue, context: grpc.ServicerContext
    ) -> wrappers_pb2.StringValue:
        flush()
        core = getattr(interceptors[0], "_core", None) if interceptors else None
        return wrappers_pb2.StringValue(
            value=json.dumps(
                {
                    "cpu": time.process_time(),
                    "events": events.count,
                    "worker_cpu": core.worker_cpu_seconds if core is not None else 0.0,
                }
            )
        )

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=interceptors)
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "auditline.account.v1.AuthService",
                {
                    "Authenticate": grpc.unary_unary_rpc_method_handler(
                        _authenticate,
                        request_deserializer=auth_pb2.AuthenticateRequest.FromString,
                        response_serializer=auth_pb2.AuthenticateResponse.SerializeToString,
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                "bench.Control",
                {
                    "Stats": grpc.unary_unary_rpc_method_handler(
                        stats,
                        request_deserializer=wrappers_pb2.StringValue.FromString,
                        response_serializer=wrappers_pb2.StringValue.SerializeToString,
                    ),
                },
            ),
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port_file.write_text(str(port))
    threading.Event().wait()  # until killed


# --- the load process -----------------------------------------------------------


async def _load(target: str, seconds: float, concurrency: int, warmup: float) -> dict[str, Any]:
    _pin(1)
    request = auth_pb2.AuthenticateRequest(access_key="AKBENCH", secret_key="s" * 43)
    async with grpc.aio.insecure_channel(target) as channel:
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
        latencies: list[float] = []
        measuring = False
        stop_at = time.perf_counter() + warmup + seconds

        async def worker() -> None:
            while (now := time.perf_counter()) < stop_at:
                await call(request)
                if measuring:
                    latencies.append(time.perf_counter() - now)

        async def measure() -> dict[str, Any]:
            nonlocal measuring
            await asyncio.sleep(warmup)
            before = json.loads((await stats_call(wrappers_pb2.StringValue())).value)
            measuring = True
            started = time.perf_counter()
            await asyncio.sleep(seconds)
            measuring = False
            elapsed = time.perf_counter() - started
            calls = len(latencies)
            after = json.loads((await stats_call(wrappers_pb2.StringValue())).value)
            return {
                "calls": calls,
                "elapsed": elapsed,
                "cpu": after["cpu"] - before["cpu"],
                "worker_cpu": after["worker_cpu"] - before["worker_cpu"],
            }

        results = await asyncio.gather(measure(), *(worker() for _ in range(concurrency)))
        window: dict[str, Any] = results[0]
        latencies.sort()
        window["p50"] = latencies[len(latencies) // 2]
        window["p99"] = latencies[int(len(latencies) * 0.99)]
        return window


# --- the orchestrator -------------------------------------------------------------


def _run_mode(mode: str, seconds: float, concurrency: int, warmup: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.interceptor",
                "--serve",
                mode,
                "--port-file",
                str(port_file),
            ]
        )
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"the {mode} server did not start")
                time.sleep(0.05)
            target = f"127.0.0.1:{port_file.read_text()}"
            load = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.interceptor",
                    "--load",
                    target,
                    "--seconds",
                    str(seconds),
                    "--concurrency",
                    str(concurrency),
                    "--warmup",
                    str(warmup),
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=seconds + warmup + 120,
            )
            result: dict[str, Any] = json.loads(load.stdout)
            return result
        finally:
            server.kill()
            server.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode, interleaved")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--serve", choices=MODES + PIPELINE_MODES, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve:
        serve(args.serve, args.port_file)
        return 0
    if args.load:
        result = asyncio.run(_load(args.load, args.seconds, args.concurrency, args.warmup))
        print(json.dumps(result))
        return 0

    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for round_number in range(args.rounds):
        for mode in MODES:
            result = _run_mode(mode, args.seconds, args.concurrency, args.warmup)
            result["throughput"] = result["calls"] / result["elapsed"]
            result["cpu_per_call"] = result["cpu"] / result["calls"] * 1e6
            result["worker_per_call"] = result["worker_cpu"] / result["calls"] * 1e6
            runs[mode].append(result)
            print(
                f"round {round_number + 1} {mode:9} {result['throughput']:8.0f} calls/s "
                f"{result['cpu_per_call']:6.0f} us CPU/call",
                file=sys.stderr,
            )

    def median(mode: str, key: str) -> float:
        return float(statistics.median(run[key] for run in runs[mode]))

    base_tp, base_cpu = median("bare", "throughput"), median("bare", "cpu_per_call")
    print(
        f"\nunary Authenticate, sync server (8 threads), {args.concurrency} calls in flight, "
        f"{args.seconds:g}s x {args.rounds} rounds, median; {os.cpu_count()} CPUs\n"
    )
    print(
        "| server | calls/s | vs bare | p50 ms | p99 ms | server CPU us/call | vs bare "
        "| of which event building, off the request path |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode in MODES:
        tp, cpu = median(mode, "throughput"), median(mode, "cpu_per_call")
        worker = median(mode, "worker_per_call")
        print(
            f"| {mode} | {tp:,.0f} | {tp / base_tp:.2f}x | {median(mode, 'p50') * 1e3:.2f} "
            f"| {median(mode, 'p99') * 1e3:.2f} | {cpu:.0f} | {cpu / base_cpu:.2f}x "
            f"| {worker:.0f} |"
            if worker
            else f"| {mode} | {tp:,.0f} | {tp / base_tp:.2f}x | {median(mode, 'p50') * 1e3:.2f} "
            f"| {median(mode, 'p99') * 1e3:.2f} | {cpu:.0f} | {cpu / base_cpu:.2f}x | - |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
