"""The cost of proving the log: `python -m bench.integrity`.

For each format (zstd, filesystem store, one core): the whole exporter's events/s
without and with manifests and signed checkpoints (rounds interleaved; the ratio is
the cost of signing), the leaf hashing the spool's writer does per event, and
`auditline verify`'s events/s over the files written.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from auditline.interceptor import Exporter, ExporterConfig, Spool
from auditline.interceptor._spool_tree import leaves_of
from auditline.interceptor.integrity import LocalDirectory, Notary, SigningKey, Verifier
from auditline.server.audit_target import BucketWriter
from auditline.server.objectstore import FilesystemStore
from bench import servers
from bench.pipeline import _event

FORMATS = ("apievent-json", "ocsf-json")


def _spool(workdir: Path, events: int) -> Spool:
    spool = Spool(workdir / f"{uuid.uuid4().hex}.db", node_id="bench")
    for i in range(events):
        spool.emit(_event(i))
    spool.flush(60)
    return spool


def _export(
    store: FilesystemStore, workdir: Path, events: int, fmt: str, notary: Notary | None
) -> tuple[float, str]:
    """Whole-exporter events/s (CPU) and the bucket written."""
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    store.create_bucket(bucket, object_lock=False)
    spool = _spool(workdir, events)
    exporter = Exporter(
        ExporterConfig(name="bench", format=fmt, compression="zstd"),
        spool,
        BucketWriter(store, bucket),
        node_id="bench",
        notary=notary,
    )
    started = time.process_time()
    while exporter.export_once():
        pass
    cpu = time.process_time() - started
    spool.close()
    return events / max(cpu, 1e-9), bucket


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    servers.pin(0)
    key = SigningKey.generate("bench/node")
    notary = Notary(key=key, origin="bench/node", node_id="bench")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        store = FilesystemStore(workdir / "objects")
        print(f"\nproving the log, {args.events:,} CreateBucket events, zstd, filesystem, one core")
        print(f"median of {args.rounds} interleaved rounds\n")
        print(
            "| format | whole exporter events/s | with checkpoints events/s | ratio "
            "| leaf hashing us/event (spool writer) | verify events/s |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for fmt in FORMATS:
            plain, signed, verify = [], [], []
            bucket = ""
            for _ in range(args.rounds):
                plain.append(_export(store, workdir, args.events, fmt, None)[0])
                rate, bucket = _export(store, workdir, args.events, fmt, notary)
                signed.append(rate)
                started = time.process_time()
                root = workdir / "objects" / bucket / "objects"
                report = Verifier(LocalDirectory(root), [key.verifier]).run()
                assert report.ok, report.findings
                verify.append(report.events / (time.process_time() - started))
            spool = _spool(workdir, args.events)
            bodies = [e.body for e in spool.store.read(0, limit=args.events)]
            spool.close()
            started = time.process_time()
            leaves_of(bodies)
            hashing = (time.process_time() - started) / len(bodies) * 1e6
            p, s = statistics.median(plain), statistics.median(signed)
            print(
                f"| {fmt} | {p:,.0f} | {s:,.0f} | {s / p:.2f}x | {hashing:.1f} "
                f"| {statistics.median(verify):,.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
