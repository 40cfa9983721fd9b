"""A real SeaweedFS S3 gateway (with object lock) on free loopback ports."""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.processes import find_binary, free_fixed_port, stop_process, wait_for

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Every weed component also listens on a gRPC port; naming each one explicitly
# (instead of letting weed add 10000) keeps them all on ports checked to be free.
_COMPONENT_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


class _PortTaken(RuntimeError):
    """weed exited because a port chosen for it was bound by someone else first."""


def _choose_ports() -> dict[str, int]:
    chosen: set[int] = set()
    while len(chosen) < len(_COMPONENT_PORTS):
        chosen.add(free_fixed_port())
    return dict(zip(_COMPONENT_PORTS, sorted(chosen), strict=True))


class SeaweedFS:
    """`weed server -s3` in a temporary directory, with one admin S3 identity."""

    region = "us-east-1"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.access_key = "AK" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.ports = _choose_ports()
        self.log_path = workdir / "weed.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def store_url(self) -> str:
        """The `--object-store` of `auditline serve` on this SeaweedFS."""
        return f"s3://?endpoint={self.endpoint}&region={self.region}"

    @property
    def shared_store_args(self) -> list[str]:
        """`auditline serve` arguments for this SeaweedFS as an object store other tests'
        servers use too: their buckets are left outside this server's catalogue (the
        default, adopting them, would make each server's bucket list everyone's)."""
        return ["--object-store", self.store_url, "--bucket-mismatch", "leave"]

    @property
    def aws_env(self) -> dict[str, str]:
        """The environment that gives a process this SeaweedFS's S3 identity."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def start(self, *, timeout: float = 60.0) -> None:
        """Start weed; a first start whose port another test bound meanwhile retries on
        fresh ports (a restart keeps its ports: clients know the endpoint)."""
        for attempt in range(3):
            try:
                self._start_once(timeout=timeout)
            except _PortTaken:
                if self._started_once or attempt == 2:
                    raise
                self.ports = _choose_ports()
                continue
            self._started_once = True
            return

    def _start_once(self, *, timeout: float) -> None:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        identity = {
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        args = [
            find_binary("weed"),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            "-filer",
            "-s3",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._s3_answers, timeout=timeout, what=f"SeaweedFS S3 at {self.endpoint}")

    def _s3_answers(self) -> bool | None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            log = self.log_path.read_text()[-3000:]
            if "address already in use" in log:
                raise _PortTaken(f"weed could not bind a port:\n{log}")
            raise RuntimeError(f"weed exited early:\n{log}")
        try:
            urllib.request.urlopen(self.endpoint, timeout=1)  # noqa: S310 - loopback test server
        except urllib.error.HTTPError:
            return True  # an S3 error (403 for an anonymous list) means it is serving
        except OSError:
            return None
        return True

    def stop(self) -> None:
        if self._proc is not None:
            # weed may ignore SIGTERM; stop_process falls back to SIGKILL.
            stop_process(self._proc, timeout=5)
            self._proc = None

    def client(self, **overrides: Any) -> S3Client:
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        }
        return boto3.client("s3", **{**options, **overrides})
