"""One `auditline serve` shared by a module's tests (tests/server/conftest.py's `server`
fixture, once per object-store backend), and the resources its tests create on it.

Tests on a shared server create uniquely named resources (`new_name`), so that they
do not depend on each other or on their order.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditline.account.v1 import bucket_pb2, permission_pb2
from auditline.account.v1 import service_account_pb2 as sa_pb
from auditline.client import Client
from auditline.server.objectstore import FilesystemStore, ObjectStore
from auditline.server.s3_store import S3Store
from tests.support.clients import login
from tests.support.postgres import PostgreSQL
from tests.support.seaweedfs import SeaweedFS
from tests.support.serve import ServeProcess

ADMIN_KEY = "AKTESTADMIN"
ADMIN_SECRET = "admin-secret-" + uuid.uuid4().hex
# The state store and the object store: each of the two of each is run once, so the
# account suite runs on SQLite and on PostgreSQL, on the filesystem and on S3; and once
# more with the audit side in an audit worker (`--audit-process worker`).
BACKENDS = ("sqlite+file", "postgresql+s3", "sqlite+file+worker")


def admin_env() -> dict[str, str]:
    """The environment that makes ADMIN_KEY / ADMIN_SECRET the first admin's keys."""
    return {"AUDITLINE_ADMIN_ACCESS_KEY": ADMIN_KEY, "AUDITLINE_ADMIN_SECRET_KEY": ADMIN_SECRET}


@dataclasses.dataclass
class Server:
    process: ServeProcess
    store: ObjectStore  # the same storage the server uses, reached directly
    admin: Client

    @property
    def target(self) -> str:
        return self.process.target


def start_server(
    data_dir: Path, backend: str, request: pytest.FixtureRequest, *args: str
) -> tuple[ServeProcess, ObjectStore]:
    """`auditline serve` on SQLite and the filesystem store, or on PostgreSQL and
    SeaweedFS (a new database of the session's server), or on SQLite and the filesystem
    with an audit worker: `backend` is one of BACKENDS."""
    env = admin_env()
    store: ObjectStore
    if backend.startswith("postgresql+"):
        postgres: PostgreSQL = request.getfixturevalue("postgres")
        args = ("--database-url", postgres.new_database(), *args)
    if "+s3" in backend:
        seaweed: SeaweedFS = request.getfixturevalue("seaweedfs")
        env |= seaweed.aws_env
        args = (*seaweed.shared_store_args, *args)
        store = S3Store(client=seaweed.client())
    else:
        store = FilesystemStore(data_dir / "objects")
    args = ("--audit-process", "worker" if backend.endswith("+worker") else "serving", *args)
    process = ServeProcess(data_dir, args=["--usage-snapshot-interval", "0", *args], env=env)
    return process.start(), store


def module_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    label: str,
    *args: str,
) -> Iterator[Server]:
    """The body of a module's `server` fixture (parametrized by BACKENDS): `auditline
    serve ARGS` with an admin logged in, stopped after the module."""
    process, store = start_server(
        tmp_path_factory.mktemp(label) / "data", request.param, request, *args
    )
    try:
        admin = login(process.target, ADMIN_KEY, ADMIN_SECRET)
        yield Server(process, store, admin)
        admin.close()
    finally:
        process.stop()


def new_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_account(
    admin: Client,
    role: sa_pb.Role.ValueType = sa_pb.ROLE_STANDARD,
    permissions: tuple[str, ...] = (),
) -> tuple[sa_pb.ServiceAccount, str]:
    """A new service account and its secret key."""
    response = admin.accounts.CreateServiceAccount(
        sa_pb.CreateServiceAccountRequest(
            service_account=sa_pb.ServiceAccount(
                display_name=new_name("acct"), role=role, permissions=permissions
            )
        )
    )
    return response.service_account, response.secret_key


def login_as(
    server: Server, role: sa_pb.Role.ValueType, permissions: tuple[str, ...] = ()
) -> Client:
    """A client logged in as a new account of `role`."""
    account, secret = new_account(server.admin, role, permissions)
    return login(server.target, account.access_key, secret)


def new_bucket(client: Client, *, immutable: bool = False) -> str:
    """A new bucket's name (its id, not `buckets/<id>`)."""
    name = new_name("bkt")
    client.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=name, immutable=immutable))
    return name


def new_permission(client: Client, **fields: Any) -> permission_pb2.Permission:
    """A new permission; READ access under a new display name unless `fields` say else."""
    fields.setdefault("display_name", new_name("perm"))
    fields.setdefault("access", permission_pb2.ACCESS_READ)
    response = client.permissions.CreatePermission(
        permission_pb2.CreatePermissionRequest(permission=permission_pb2.Permission(**fields))
    )
    return response.permission
