"""Interceptor overhead: `python -m bench.interceptor`.

Starts the same unary service (AuthService/Authenticate, whose request and
response carry secrets to redact; `bench.servers`) in each mode, each in its own
server process, on a thread pool server or (`--server aio`) an asyncio one:

- `bare`: no interceptor (the baseline),
- `auditline`: the audit interceptor with HMAC redaction, events built and handed
  to a sink that counts them,
- `auditline-worker`: the same interceptor with an `AuditWorker`: captures go over a
  pipe to a worker process, which builds the events and spools them (async),
- `otel`: OpenTelemetry's `opentelemetry-instrumentation-grpc` server
  interceptor with the SDK and a batch span processor (spans discarded),
- on request (sync server), `probe-wrap`, `probe-capture`, `probe-settle`,
  `probe-encode`: `auditline-worker` cut short after one step of its audit path
  (`bench.probes`), to see what each step costs.

A separate load process drives each with the same closed-loop load (N calls in
flight) for a fixed time: nghttp2's `h2load` when it is installed, else (or with
`--load-generator python`, or `--rate`) a Python gRPC client. Server CPU is read
inside the server after its background work (event building, span export) has
been flushed, so deferred work is counted; a worker process's CPU is read from
/proc and reported beside it (the total over both processes). Modes run
interleaved for several rounds; the table shows the median round, with ratios
against `bare` measured in the same run.

Pinned (the default): the server on one core, the load (and the audit worker) on
the other. `--unpinned`: every process anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import load
from bench.probes import PROBES
from bench.servers import (
    MODES,
    PIPELINE_MODES,
    SERVERS,
    THREADS,
    UNPINNED,
    pool_threads,
    serve,
)


@contextlib.contextmanager
def started_server(mode: str, server_kind: str) -> Iterator[str]:
    """A server process of `mode` (`bench.servers`); yields its target, kills it after."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.interceptor",
                "--serve",
                mode,
                "--server",
                server_kind,
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
            yield f"127.0.0.1:{port_file.read_text()}"
        finally:
            server.kill()
            server.wait()


def _run_mode(
    mode: str,
    server_kind: str,
    seconds: float,
    concurrency: int,
    warmup: float,
    rate: float | None = None,
    generator: str = "python",
) -> dict[str, Any]:
    with started_server(mode, server_kind) as target:
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
                *(["--rate", str(rate)] if rate else []),
                "--load-generator",
                generator,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + warmup + 120,
        )
        result: dict[str, Any] = json.loads(load.stdout)
        return result


def measure(
    modes: tuple[str, ...],
    seconds: float,
    rounds: int,
    concurrency: int,
    warmup: float,
    server_kind: str = "sync",
    show_threads: bool = False,
    rate: float | None = None,
    generator: str = "python",
) -> dict[str, list[dict[str, Any]]]:
    """Each mode's runs, interleaved round by round, with per-call figures (and, with
    `show_threads`, the serving process's CPU per call of each thread, on stderr)."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for round_number in range(rounds):
        for mode in modes:
            result = _run_mode(mode, server_kind, seconds, concurrency, warmup, rate, generator)
            calls = result["calls"]
            result["throughput"] = calls / result["elapsed"]
            result["cpu_per_call"] = result["cpu"] / calls * 1e6
            result["worker_per_call"] = result["worker_cpu"] / calls * 1e6
            result["process_per_call"] = result["worker_process_cpu"] / calls * 1e6
            result["total_per_call"] = result["cpu_per_call"] + result["process_per_call"]
            runs[mode].append(result)
            print(
                f"round {round_number + 1} {mode:21} {result['throughput']:8.0f} calls/s "
                f"{result['cpu_per_call']:6.0f} us CPU/call",
                file=sys.stderr,
            )
            if show_threads:
                for name, cpu in sorted(result["threads"].items()):
                    if cpu / calls * 1e6 >= 0.5:
                        print(f"    {name:32} {cpu / calls * 1e6:6.1f} us/call", file=sys.stderr)
    return runs


def table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The Markdown table of `measure`'s medians, ratios against `bare`."""

    def median(mode: str, key: str) -> float:
        return float(statistics.median(run[key] for run in runs[mode]))

    base_tp, base_cpu = median("bare", "throughput"), median("bare", "cpu_per_call")
    lines = [
        "| server | calls/s | vs bare | p50 ms | p99 ms | serving process CPU us/call "
        "| vs bare | of which built in the background | worker process CPU us/call "
        "| total CPU us/call | vs bare |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode in runs:
        tp, cpu = median(mode, "throughput"), median(mode, "cpu_per_call")
        building, process = median(mode, "worker_per_call"), median(mode, "process_per_call")
        total = median(mode, "total_per_call")
        lines.append(
            f"| {mode} | {tp:,.0f} | {tp / base_tp:.2f}x | {median(mode, 'p50') * 1e3:.2f} "
            f"| {median(mode, 'p99') * 1e3:.2f} | {cpu:.0f} | {cpu / base_cpu:.2f}x "
            f"| {f'{building:.0f}' if building else '-'} | {f'{process:.0f}' if process else '-'} "
            f"| {total:.0f} | {total / base_cpu:.2f}x |"
        )
    return lines


def _threads(text: str) -> int:
    threads = int(text)
    if threads < 1:
        raise argparse.ArgumentTypeError("a server needs a thread at least")
    return threads


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server-threads",
        type=_threads,
        help="the sync server's pool threads (8 by default; a fail-closed call holds one "
        "while it waits for its commit)",
    )


def use_threads_argument(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`--server-threads`, checked and passed on to the server processes (they inherit
    the environment)."""
    if args.server_threads is None:
        return
    if args.server == "aio":
        parser.error("--server-threads is the sync server's: not with --server aio")
    os.environ[THREADS] = str(args.server_threads)


def server_name(kind: str) -> str:
    return f"sync server ({pool_threads()} threads)" if kind == "sync" else "asyncio server"


def cores_note() -> str:
    if os.environ.get(UNPINNED):
        return "unpinned: the server, its worker and the load anywhere"
    return "pinned: the server on core 0; the load and the audit worker on core 1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode, interleaved")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument(
        "--rate",
        type=float,
        help="pace the load to this many calls/s (one every mode sustains): each mode's "
        "CPU per call at the same load, rather than at its own saturation (Python load)",
    )
    parser.add_argument(
        "--load-generator",
        choices=load.LOAD_GENERATORS,
        default="auto",
        help="h2load (nghttp2-client; far less CPU per call, which leaves the audit worker "
        "its core) or the Python gRPC client; auto: h2load when installed and not --rate",
    )
    parser.add_argument(
        "--threads",
        action="store_true",
        help="after each run, print the serving process's CPU per call of each thread",
    )
    parser.add_argument("--unpinned", action="store_true", help="let every process run anywhere")
    parser.add_argument(
        "--server", choices=SERVERS, default="sync", help="thread pool (sync) or asyncio server"
    )
    add_threads_argument(parser)
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated, from {', '.join(MODES + PROBES)} (bare always runs)",
    )
    parser.add_argument("--serve", choices=MODES + PIPELINE_MODES + PROBES, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.unpinned:
        os.environ[UNPINNED] = "1"  # the server, worker and load processes inherit it
    use_threads_argument(parser, args)

    if args.serve:
        serve(args.serve, args.server, args.port_file)
        return 0
    if args.load:
        if args.load_generator == "h2load":
            run = load.run_h2load(args.load, args.seconds, args.concurrency, args.warmup)
        else:
            run = load.run_python(args.load, args.seconds, args.concurrency, args.warmup, args.rate)
        result = asyncio.run(run)
        print(json.dumps(result))
        return 0

    chosen = args.modes.split(",")
    if args.server == "aio" and args.modes == parser.get_default("modes"):
        # OpenTelemetry's asyncio server interceptor fails these calls ("object
        # AuthenticateResponse can't be used in 'await' expression").
        chosen.remove("otel")
    modes = tuple(dict.fromkeys(["bare", *chosen]))
    unknown = set(modes) - set(MODES + PROBES)
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    if args.server == "aio" and set(modes) & set(PROBES):
        parser.error("the probes cut the sync server's audit path: not with --server aio")
    generator = load.load_generator(args.load_generator, args.rate)
    runs = measure(
        modes,
        args.seconds,
        args.rounds,
        args.concurrency,
        args.warmup,
        server_kind=args.server,
        show_threads=args.threads,
        rate=args.rate,
        generator=generator,
    )
    print(
        f"\nunary Authenticate, {server_name(args.server)}, {args.concurrency} calls in flight"
        f"{f' paced to {args.rate:,.0f} calls/s' if args.rate else ''} "
        f"({generator} load), "
        f"{args.seconds:g}s x {args.rounds} rounds, median; {os.cpu_count()} CPUs, "
        f"{cores_note()}\n"
    )
    print("\n".join(table(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
