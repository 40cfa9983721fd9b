"""`auditline serve` as a real subprocess on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.processes import stop_process, wait_for

_LISTENING = re.compile(r"auditline listening on (\S+):(\d+)")


class ServeProcess:
    """Runs `auditline serve --listen 127.0.0.1:0` and learns the port from its log."""

    def __init__(
        self, data_dir: Path, *, args: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}.serve.log"
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self._proc is not None, "not started"
        return self._proc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, *, timeout: float = 30.0) -> ServeProcess:
        command = [
            sys.executable,
            "-m",
            "auditline.client.cli",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        self.port = int(wait_for(self._bound_port, timeout=timeout, what="auditline serve"))
        return self

    def _bound_port(self) -> str | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"auditline serve exited {self.proc.returncode}:\n{self.log()}")
        match = _LISTENING.search(self.log())
        return match.group(2) if match else None

    def terminate(self, *, timeout: float = 20.0) -> int:
        """Send SIGTERM and wait for the exit code (SIGKILL after `timeout`)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return stop_process(self.proc, timeout=1)

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
