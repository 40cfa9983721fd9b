"""Fixtures shared by the test suite. Every server runs on a free loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.support.postgres import PostgreSQL
from tests.support.processes import find_binary
from tests.support.seaweedfs import SeaweedFS
from tests.support.serve import ServeProcess


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS (master, volume, filer, S3 gateway) per test process."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgreSQL]:
    """One PostgreSQL server per test process; each test server makes its own database."""
    server = PostgreSQL()
    try:
        server.start()
        yield server
    finally:
        server.remove()


ServeFactory = Callable[..., ServeProcess]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeFactory]:
    """Start `auditline serve` subprocesses; each is stopped after the test."""
    started: list[ServeProcess] = []

    def start(
        *args: str, env: Mapping[str, str] | None = None, data_dir: Path | None = None
    ) -> ServeProcess:
        process = ServeProcess(data_dir or tmp_path / f"data{len(started)}", args=args, env=env)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def grpcurl() -> Callable[..., str]:
    """Run grpcurl (plaintext) and return its stdout; raise on a non-zero exit."""
    import subprocess

    binary = find_binary("grpcurl")

    def run(*args: str, check: bool = True) -> str:
        result = subprocess.run(
            [binary, "-plaintext", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"grpcurl {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout + (result.stderr if not check else "")

    return run


__all__: Sequence[str] = ()
