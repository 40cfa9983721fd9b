"""PermissionService: create, read, update and delete, and what each field must hold."""

from __future__ import annotations

import pytest
from google.protobuf import field_mask_pb2

from auditline.account.v1 import permission_pb2
from auditline.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from tests.support.account_server import Server, new_account, new_bucket, new_permission


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
