"""The load process of `bench.interceptor` and `bench.pipeline`: a closed loop of
calls (N in flight) on one server for a fixed time, driven by nghttp2's `h2load` or
a Python gRPC client, and what the server did meanwhile (its `Stats` before and
after)."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import wrappers_pb2

from bench.servers import METHOD, REQUEST, load_calls, pin

# nghttp2's HTTP/2 load generator (Debian's nghttp2-client), when installed.
H2LOAD = shutil.which("h2load")
LOAD_GENERATORS = ("auto", "h2load", "python")


def _difference(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the server did between two `Stats` replies."""
    return {
        "handled": after["handled"] - before["handled"],
        "cpu": after["cpu"] - before["cpu"],
        "worker_cpu": after["worker_cpu"] - before["worker_cpu"],
        "worker_process_cpu": after["worker_process_cpu"] - before["worker_process_cpu"],
        "threads": {
            name: cpu - before["threads"].get(name, 0.0) for name, cpu in after["threads"].items()
        },
    }


async def _stats(stats_call: Any) -> dict[str, Any]:
    reply = await stats_call(wrappers_pb2.StringValue())
    stats: dict[str, Any] = json.loads(reply.value)
    return stats


async def run_python(
    target: str, seconds: float, concurrency: int, warmup: float, rate: float | None = None
) -> dict[str, Any]:
    """Calls in a closed loop (`concurrency` in flight); with `rate`, paced to that many
    calls/s in all (a call that falls behind its time starts at once, with no catching up
    later)."""
    pin(1)
    request = REQUEST
    async with grpc.aio.insecure_channel(target) as channel:
        call, stats_call = load_calls(channel)
        latencies: list[float] = []
        measuring = False
        stop_at = time.perf_counter() + warmup + seconds

        async def worker(offset: float) -> None:
            interval = concurrency / rate if rate else 0.0
            due = time.perf_counter() + offset * interval
            while (now := time.perf_counter()) < stop_at:
                if interval:
                    if due > now:
                        await asyncio.sleep(due - now)
                        now = time.perf_counter()
                    due = max(due, now - interval) + interval
                await call(request)
                if measuring:
                    latencies.append(time.perf_counter() - now)

        async def measure() -> dict[str, Any]:
            nonlocal measuring
            await asyncio.sleep(warmup)
            before = await _stats(stats_call)
            measuring = True
            started = time.perf_counter()
            await asyncio.sleep(seconds)
            measuring = False
            elapsed = time.perf_counter() - started
            calls = len(latencies)
            window = _difference(before, await _stats(stats_call))
            return {**window, "calls": calls, "elapsed": elapsed}

        results = await asyncio.gather(
            measure(), *(worker(i / concurrency) for i in range(concurrency))
        )
        window: dict[str, Any] = results[0]
        latencies.sort()
        window["p50"] = latencies[len(latencies) // 2]
        window["p99"] = latencies[int(len(latencies) * 0.99)]
        return window


async def run_h2load(
    target: str, seconds: float, concurrency: int, warmup: float
) -> dict[str, Any]:
    """The same closed loop driven by nghttp2's `h2load` (C, ~12 us of CPU per call
    against the Python load's ~75): on a 2-core machine the load then leaves most of
    its core to the audit worker. Calls are counted by the server (h2load sees HTTP
    statuses, not gRPC ones); latencies come from its per-request log."""
    pin(1)  # h2load inherits the core
    assert H2LOAD is not None
    frame = REQUEST.SerializeToString()
    with tempfile.TemporaryDirectory() as tmp:
        body, log = Path(tmp) / "request", Path(tmp) / "log"
        body.write_bytes(b"\0" + len(frame).to_bytes(4, "big") + frame)  # a gRPC message
        h2load = await asyncio.create_subprocess_exec(
            *(H2LOAD, "--warm-up-time", f"{warmup * 1000:.0f}ms"),
            *("--duration", f"{seconds * 1000:.0f}ms"),
            *("--clients", "1", "--max-concurrent-streams", str(concurrency)),
            *("--data", str(body), "--log-file", str(log)),
            *("--header", "content-type: application/grpc", "--header", "te: trailers"),
            f"http://{target}{METHOD}",
            stdout=asyncio.subprocess.DEVNULL,
        )
        async with grpc.aio.insecure_channel(target) as channel:
            _, stats_call = load_calls(channel)
            await asyncio.sleep(warmup)
            before = await _stats(stats_call)
            started = time.perf_counter()
            await asyncio.sleep(seconds)
            elapsed = time.perf_counter() - started
            window = _difference(before, await _stats(stats_call))
        if await h2load.wait():
            raise RuntimeError(f"h2load failed (exit code {h2load.returncode})")
        latencies = sorted(
            int(line.split("\t")[2]) / 1e6
            for line in log.read_text().splitlines()
            if line.split("\t")[1] == "200"
        )
    return {
        **window,
        "calls": window["handled"],
        "elapsed": elapsed,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
    }


def load_generator(choice: str, rate: float | None = None) -> str:
    """The load generator `choice` ("auto", ...) comes to."""
    if choice == "auto":
        return "h2load" if H2LOAD and not rate else "python"
    if choice == "h2load" and (not H2LOAD or rate):
        raise SystemExit("h2load is not installed (nghttp2-client), or --rate was given")
    return choice
