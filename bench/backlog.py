"""Memory with a growing backlog: `python -m bench.backlog`.

The object store is down (every export fails), so every event of every call stays in
the spool. A closed-loop load makes `--events` calls to the server of each mode
(`bench.servers`: the whole pipeline, async, in the serving process or in an audit
worker) and, at each tenth of the way, reads the resident size of the serving
process and of its audit worker and the spool's size on disk. Bounded memory means
the resident sizes stay flat while the spool grows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import grpc
from google.protobuf import wrappers_pb2

from bench.interceptor import started_server
from bench.servers import REQUEST, SERVERS, STORE_DOWN, load_calls, pin

MODES = ("pipeline-async", "pipeline-async-worker")


async def _fill(target: str, events: int, concurrency: int) -> list[dict[str, Any]]:
    """Make `events` calls; the server's figures at each tenth (and at the start)."""
    pin(1)
    request = REQUEST
    async with grpc.aio.insecure_channel(target) as channel:
        call, stats_call = load_calls(channel)

        async def sample(done: int) -> dict[str, Any]:
            figures = json.loads((await stats_call(wrappers_pb2.StringValue())).value)
            return {"calls": done, **figures}

        samples = [await sample(0)]
        step = max(events // 10, 1)
        done = 0
        while done < events:
            target_done = min(done + step, events)
            remaining = target_done - done

            async def worker(share: int) -> None:
                for _ in range(share):
                    await call(request)

            shares = [remaining // concurrency] * concurrency
            shares[0] += remaining - sum(shares)
            await asyncio.gather(*(worker(share) for share in shares))
            done = target_done
            samples.append(await sample(done))
            print(f"  {done:,} calls, server {samples[-1]['rss'] >> 20} MB", file=sys.stderr)
        return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--server", choices=SERVERS, default="sync")
    args = parser.parse_args(argv)
    os.environ[STORE_DOWN] = "1"  # the server processes inherit it
    results: dict[str, list[dict[str, Any]]] = {}
    for mode in MODES:
        print(f"{mode}:", file=sys.stderr)
        with started_server(mode, args.server) as target:
            results[mode] = asyncio.run(_fill(target, args.events, args.concurrency))
    print(
        f"\nbacklog of {args.events:,} events (object store down), {args.server} server, "
        f"{args.concurrency} calls in flight; resident sizes in MB, spool on disk in MB\n"
    )
    print("| backlog | " + " | ".join(f"{m} server | {m} worker | spool" for m in MODES) + " |")
    print("| ---: |" + " ---: | ---: | ---: |" * len(MODES))
    for row in zip(*results.values(), strict=True):
        cells = []
        for sample in row:
            worker = f"{sample['worker_rss'] / 2**20:.0f}" if sample["worker_rss"] else "-"
            cells += [
                f"{sample['rss'] / 2**20:.0f}",
                worker,
                f"{sample['spool_bytes'] / 2**20:.0f}",
            ]
        print(f"| {row[0]['calls']:,} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
