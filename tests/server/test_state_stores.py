"""The state store under concurrency, on SQLite and on PostgreSQL (the module's server
runs once on each, see BACKENDS): creates of one name at once give one success and
`ALREADY_EXISTS` for the rest, never two rows or an internal error; and the
PostgreSQL server's state is really in PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import grpc
import pytest

from auditline.account.v1 import bucket_pb2, permission_pb2
from auditline.account.v1 import service_account_pb2 as sa_pb
from auditline.audit.v1 import exporter_pb2
from auditline.client import Client
from tests.support.account_server import ADMIN_KEY, ADMIN_SECRET, Server, new_bucket, new_name
from tests.support.clients import login
from tests.support.outcome import code_of

AT_ONCE = 8


def _at_once(server: Server, make: Callable[[Client], object]) -> Counter[grpc.StatusCode]:
    """`make` called by AT_ONCE clients of their own, released together."""
    clients = [login(server.target, ADMIN_KEY, ADMIN_SECRET) for _ in range(AT_ONCE)]
    start = threading.Barrier(AT_ONCE)
    codes: list[grpc.StatusCode] = []

    def one(client: Client) -> None:
        start.wait()
        codes.append(code_of(lambda: make(client)))

    threads = [threading.Thread(target=one, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    return Counter(codes)


ONE_WINNER = Counter({grpc.StatusCode.OK: 1, grpc.StatusCode.ALREADY_EXISTS: AT_ONCE - 1})


def test_one_bucket_of_a_name(server: Server) -> None:
    name = new_name("race")
    codes = _at_once(
        server,
        lambda c: c.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=name)),
    )
    assert codes == ONE_WINNER
    listed = server.admin.buckets.ListBuckets(bucket_pb2.ListBucketsRequest(page_size=1000))
    assert [b.name for b in listed.buckets].count(f"buckets/{name}") == 1


def test_one_account_of_a_name(server: Server) -> None:
    name = new_name("race")
    account = sa_pb.ServiceAccount(display_name=name, role=sa_pb.ROLE_STANDARD)
    codes = _at_once(
        server,
        lambda c: c.accounts.CreateServiceAccount(
            sa_pb.CreateServiceAccountRequest(service_account=account)
        ),
    )
    assert codes == ONE_WINNER
    listed = server.admin.accounts.ListServiceAccounts(
        sa_pb.ListServiceAccountsRequest(page_size=1000)
    )
    assert [a.display_name for a in listed.service_accounts].count(name) == 1


def test_one_permission_and_one_exporter_of_a_name(server: Server) -> None:
    name = new_name("race")
    permission = permission_pb2.Permission(
        display_name=name,
        access=permission_pb2.ACCESS_READ,
        bucket_scope=permission_pb2.BUCKET_SCOPE_ALL,
    )
    codes = _at_once(
        server,
        lambda c: c.permissions.CreatePermission(
            permission_pb2.CreatePermissionRequest(permission=permission)
        ),
    )
    assert codes == ONE_WINNER
    bucket = new_bucket(server.admin)
    exporter = exporter_pb2.Exporter(display_name=name, bucket=bucket)
    codes = _at_once(
        server,
        lambda c: c.exporters.CreateExporter(exporter_pb2.CreateExporterRequest(exporter=exporter)),
    )
    assert codes == ONE_WINNER


def test_the_state_is_in_the_store_the_backend_names(
    server: Server, request: pytest.FixtureRequest
) -> None:
    name = new_bucket(server.admin)
    args = server.process.args
    if "--database-url" not in args:
        assert (server.process.data_dir / "auditline.db").exists()
        return
    import sqlalchemy as sa

    url = args[args.index("--database-url") + 1]
    assert url.startswith("postgresql+psycopg://")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                sa.text("SELECT count(*) FROM buckets WHERE name = :name"), {"name": name}
            ).scalar_one()
            assert connection.dialect.name == "postgresql"
    finally:
        engine.dispose()
    assert found == 1
    assert not (server.process.data_dir / "auditline.db").exists()
