"""The account service's shared server: one per test module and object-store backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.account_server import (
    ADMIN_KEY,
    ADMIN_SECRET,
    BACKENDS,
    Server,
    start_server,
)
from tests.support.clients import login


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`auditline serve` on SQLite and the filesystem, then on PostgreSQL and SeaweedFS,
    with an admin."""
    process, store = start_server(
        tmp_path_factory.mktemp("account") / "data", request.param, request
    )
    try:
        admin = login(process.target, ADMIN_KEY, ADMIN_SECRET)
        yield Server(process, store, admin)
        admin.close()
    finally:
        process.stop()
