"""The account service's shared server: one per test module and backend pair."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.account_server import BACKENDS, Server, module_server


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`auditline serve` on SQLite and the filesystem, then on PostgreSQL and SeaweedFS,
    with an admin."""
    yield from module_server(request, tmp_path_factory, "account")


@pytest.fixture(params=("serving", "worker"))
def audit_process(request: pytest.FixtureRequest) -> str:
    """Where `auditline serve` builds, spools and exports events (`--audit-process`)."""
    return str(request.param)
