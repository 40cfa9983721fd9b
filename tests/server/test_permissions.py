"""PermissionService: create, read, update and delete, and what each field must hold."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
from google.protobuf import field_mask_pb2

from auditline.account.v1 import permission_pb2, service_account_pb2
from auditline.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from tests.conftest import ServeFactory
from tests.support.account_server import (
    Server,
    admin_env,
    new_account,
    new_bucket,
    new_permission,
)
from tests.support.clients import login_as_admin
from tests.support.outcome import at_once
from tests.support.postgres import PostgreSQL


def test_permission_crud_and_validation(server: Server) -> None:
    admin = server.admin
    bucket = new_bucket(admin)
    permission = new_permission(
        admin, bucket_scope=permission_pb2.BUCKET_SCOPE_NAMES, bucket_names=[bucket]
    )
    assert list(permission.bucket_names) == [bucket]
    got = admin.permissions.GetPermission(
        permission_pb2.GetPermissionRequest(name=permission.name)
    ).permission
    assert got == permission

    with pytest.raises(InvalidArgumentError) as missing:
        new_permission(
            admin, bucket_scope=permission_pb2.BUCKET_SCOPE_NAMES, bucket_names=["no-such-bucket-x"]
        )
    assert missing.value.field_violations[0][0] == "permission.bucket_names"
    with pytest.raises(InvalidArgumentError) as no_prefix:
        new_permission(admin, bucket_scope=permission_pb2.BUCKET_SCOPE_PREFIX)
    assert no_prefix.value.field_violations[0][0] == "permission.bucket_prefix"
    with pytest.raises(AlreadyExistsError):
        new_permission(
            admin,
            display_name=permission.display_name,
            bucket_scope=permission_pb2.BUCKET_SCOPE_ALL,
        )

    updated = admin.permissions.UpdatePermission(
        permission_pb2.UpdatePermissionRequest(
            permission=permission_pb2.Permission(
                name=permission.name, access=permission_pb2.ACCESS_READ_WRITE
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["access"]),
        )
    ).permission
    assert updated.access == permission_pb2.ACCESS_READ_WRITE
    assert list(updated.bucket_names) == [bucket]

    new_account(admin, permissions=(permission.name,))
    with pytest.raises(FailedPreconditionError) as bound:
        admin.permissions.DeletePermission(
            permission_pb2.DeletePermissionRequest(name=permission.name)
        )
    assert "force" in bound.value.details()
    admin.permissions.DeletePermission(
        permission_pb2.DeletePermissionRequest(name=permission.name, force=True)
    )
    with pytest.raises(NotFoundError):
        admin.permissions.GetPermission(permission_pb2.GetPermissionRequest(name=permission.name))


def test_changes_of_one_permission_at_once_on_postgresql_are_both_kept(
    serve: ServeFactory, postgres: PostgreSQL
) -> None:
    """Each update kept the whole row it had read: a revocation of write access made
    at once with a rename was undone in 19 of 20 rounds on two replicas (found by a
    review helper). The same race on one node's connections."""
    process = serve("--database-url", postgres.new_database(), env=admin_env())
    api = login_as_admin(process.target, admin_env())
    for _ in range(6):
        made = new_permission(
            api,
            bucket_scope=permission_pb2.BUCKET_SCOPE_ALL,
            access=permission_pb2.ACCESS_READ_WRITE,
        )

        def update(path: str, name: str = made.name, **fields: object) -> Callable[[], object]:
            request = permission_pb2.UpdatePermissionRequest(
                permission=permission_pb2.Permission(name=name, **fields),  # type: ignore[arg-type]
                update_mask=field_mask_pb2.FieldMask(paths=[path]),
            )
            return functools.partial(api.permissions.UpdatePermission, request)

        outcomes = at_once(
            update("access", access=permission_pb2.ACCESS_READ),
            update("display_name", display_name=made.display_name + "-renamed"),
        )
        assert outcomes == ["OK", "OK"]
        got = api.permissions.GetPermission(
            permission_pb2.GetPermissionRequest(name=made.name)
        ).permission
        assert (got.access, got.display_name) == (
            permission_pb2.ACCESS_READ,
            made.display_name + "-renamed",
        )


def test_a_permission_is_never_deleted_as_it_is_bound_on_postgresql(
    serve: ServeFactory, postgres: PostgreSQL
) -> None:
    """Binding it and deleting it (without force) at once both answered OK, the
    binding the first listed then gone; or the binding failed as ALREADY_EXISTS
    (found by a review helper). One of the two wins, and says so."""
    process = serve("--database-url", postgres.new_database(), env=admin_env())
    api = login_as_admin(process.target, admin_env())
    account, _ = new_account(api)
    for _ in range(6):
        made = new_permission(api, bucket_scope=permission_pb2.BUCKET_SCOPE_ALL)
        bind = service_account_pb2.UpdateServiceAccountRequest(
            service_account=service_account_pb2.ServiceAccount(
                name=account.name, permissions=[made.name]
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["permissions"]),
        )
        delete = permission_pb2.DeletePermissionRequest(name=made.name)
        outcomes = at_once(
            functools.partial(api.accounts.UpdateServiceAccount, bind),
            functools.partial(api.permissions.DeletePermission, delete),
        )
        assert outcomes in (["OK", "FAILED_PRECONDITION"], ["INVALID_ARGUMENT", "OK"]), outcomes
        bound = api.accounts.GetServiceAccount(
            service_account_pb2.GetServiceAccountRequest(name=account.name)
        ).service_account.permissions
        # (A round whose bind failed leaves the account with the one bound before.)
        assert (made.name in bound) == (outcomes[0] == "OK")
