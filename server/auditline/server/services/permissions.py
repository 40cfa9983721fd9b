"""PermissionService: which buckets service accounts may read or write."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import sqlalchemy as sa
from google.rpc import error_details_pb2
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from auditline.account.v1 import permission_pb2 as pb
from auditline.account.v1 import permission_pb2_grpc
from auditline.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError
from auditline.server.accounts import PERMISSIONS_LOCK
from auditline.server.db import Database, require_row, tables
from auditline.server.services._common import (
    bucket_id,
    check_display_name,
    check_new_id,
    list_page,
    mask_paths,
    next_page_token,
    page,
    resource_id,
    timestamp,
)

UPDATABLE = (
    "display_name",
    "description",
    "bucket_scope",
    "bucket_prefix",
    "bucket_names",
    "access",
)
MAX_BATCH = 100  # permissions one BatchCreatePermissions may create
_SCOPES = {pb.BUCKET_SCOPE_ALL, pb.BUCKET_SCOPE_PREFIX, pb.BUCKET_SCOPE_NAMES}
_ACCESS = {pb.ACCESS_READ, pb.ACCESS_WRITE, pb.ACCESS_READ_WRITE}


def covers(row: dict[str, Any], bucket: str) -> bool:
    """Whether a permission row names `bucket`."""
    scope = row["bucket_scope"]
    if scope == pb.BUCKET_SCOPE_ALL:
        return True
    if scope == pb.BUCKET_SCOPE_PREFIX:
        return bucket.startswith(row["bucket_prefix"])
    return bucket in row["bucket_names"]


def _message(row: dict[str, Any]) -> pb.Permission:
    return pb.Permission(
        name=f"permissions/{row['id']}",
        display_name=row["display_name"],
        description=row["description"],
        bucket_scope=row["bucket_scope"],
        bucket_prefix=row["bucket_prefix"],
        bucket_names=row["bucket_names"],
        access=row["access"],
        create_time=timestamp(row["created_at"]),
        update_time=timestamp(row["updated_at"]),
    )


def _prefixed(
    error: InvalidArgumentError, prefix: str
) -> list[error_details_pb2.BadRequest.FieldViolation]:
    """An entry's violations, named as fields of the batch request."""
    return [
        error_details_pb2.BadRequest.FieldViolation(field=prefix + field, description=problem)
        for field, problem in error.field_violations
    ]


def _duplicates(
    request: pb.BatchCreatePermissionsRequest,
) -> list[error_details_pb2.BadRequest.FieldViolation]:
    """Entries that repeat an earlier entry's display name or id."""
    found = []
    seen: dict[tuple[str, str], int] = {}
    for index, item in enumerate(request.requests):
        for field, value in (
            ("permission.display_name", item.permission.display_name),
            ("permission_id", item.permission_id),
        ):
            if not value:
                continue
            first = seen.setdefault((field, value), index)
            if first != index:
                found.append(
                    error_details_pb2.BadRequest.FieldViolation(
                        field=f"requests[{index}].{field}",
                        description=f"repeats requests[{first}]",
                    )
                )
    return found


class PermissionServicer(permission_pb2_grpc.PermissionServiceServicer):
    def __init__(self, db: Database, clock: Any) -> None:
        self.db = db
        self.clock = clock

    def _validate(self, connection: Connection, values: dict[str, Any]) -> None:
        check_display_name(values["display_name"], "permission.display_name")
        if values["bucket_scope"] not in _SCOPES:
            raise InvalidArgumentError.field(
                "permission.bucket_scope", "must be ALL, PREFIX or NAMES"
            )
        if values["access"] not in _ACCESS:
            raise InvalidArgumentError.field(
                "permission.access", "must be READ, WRITE or READ_WRITE"
            )
        if values["bucket_scope"] == pb.BUCKET_SCOPE_PREFIX and not values["bucket_prefix"]:
            raise InvalidArgumentError.field(
                "permission.bucket_prefix", "is required with BUCKET_SCOPE_PREFIX"
            )
        if values["bucket_scope"] == pb.BUCKET_SCOPE_NAMES:
            names = values["bucket_names"]
            if not names:
                raise InvalidArgumentError.field(
                    "permission.bucket_names", "must name at least one bucket"
                )
            t = tables.buckets
            known = set(
                connection.execute(sa.select(t.c.name).where(t.c.name.in_(names))).scalars()
            )
            missing = [n for n in names if n not in known]
            if missing:
                raise InvalidArgumentError.field(
                    "permission.bucket_names",
                    f"names buckets that do not exist: {', '.join(missing)}",
                )

    @staticmethod
    def _values(permission: pb.Permission) -> dict[str, Any]:
        return {
            "display_name": permission.display_name,
            "description": permission.description,
            "bucket_scope": permission.bucket_scope,
            "bucket_prefix": permission.bucket_prefix,
            "bucket_names": list(
                dict.fromkeys(
                    bucket_id(name, "permission.bucket_names") for name in permission.bucket_names
                )
            ),
            "access": permission.access,
        }

    @staticmethod
    def _require(connection: Connection, permission_id: str) -> dict[str, Any]:
        return require_row(
            connection, tables.permissions.c.id, permission_id, f"permissions/{permission_id}"
        )

    def ListPermissions(
        self, request: pb.ListPermissionsRequest, context: grpc.ServicerContext
    ) -> pb.ListPermissionsResponse:
        offset, limit = page(request.page_size, request.page_token)
        with self.db.begin() as connection:
            rows, total = list_page(connection, tables.permissions, offset, limit)
        return pb.ListPermissionsResponse(
            permissions=[_message(r) for r in rows],
            next_page_token=next_page_token(offset, limit, len(rows), total),
        )

    def CreatePermission(
        self, request: pb.CreatePermissionRequest, context: grpc.ServicerContext
    ) -> pb.CreatePermissionResponse:
        check_new_id(request.permission_id, "permission_id")
        values = self._values(request.permission)
        now = self.clock()
        row = {
            "id": request.permission_id or uuid.uuid4().hex[:12],
            **values,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self.db.begin() as connection:
                self._validate(connection, values)
                connection.execute(tables.permissions.insert().values(**row))
        except IntegrityError:
            raise AlreadyExistsError(
                "a permission with this display name or id exists already"
            ) from None
        return pb.CreatePermissionResponse(permission=_message(row))

    def BatchCreatePermissions(
        self, request: pb.BatchCreatePermissionsRequest, context: grpc.ServicerContext
    ) -> pb.BatchCreatePermissionsResponse:
        """All the permissions of an imported file, or none: every invalid entry is named
        in one answer, so a file is fixed in one pass."""
        if not request.requests:
            raise InvalidArgumentError.field("requests", "must hold at least one permission")
        if len(request.requests) > MAX_BATCH:
            raise InvalidArgumentError.field("requests", f"may hold at most {MAX_BATCH}")
        now = self.clock()
        try:
            with self.db.begin() as connection:
                rows, violations = self._batch_rows(connection, request, now)
                if violations:
                    raise InvalidArgumentError(
                        f"{len(violations)} problem(s) in the {len(request.requests)} "
                        "permissions; none was created",
                        details=[error_details_pb2.BadRequest(field_violations=violations)],
                    )
                connection.execute(tables.permissions.insert(), rows)
        except IntegrityError:
            raise AlreadyExistsError(
                "a permission with one of these display names or ids exists already; "
                "none was created"
            ) from None
        return pb.BatchCreatePermissionsResponse(permissions=[_message(r) for r in rows])

    def _batch_rows(
        self, connection: Connection, request: pb.BatchCreatePermissionsRequest, now: float
    ) -> tuple[list[dict[str, Any]], list[error_details_pb2.BadRequest.FieldViolation]]:
        """The rows to insert, and every entry's problems."""
        rows: list[dict[str, Any]] = []
        violations: list[error_details_pb2.BadRequest.FieldViolation] = []
        for index, item in enumerate(request.requests):
            try:
                values = self._values(item.permission)
                check_new_id(item.permission_id, "permission_id")
                self._validate(connection, values)
            except InvalidArgumentError as error:
                violations += _prefixed(error, f"requests[{index}].")
                continue
            row_id = item.permission_id or uuid.uuid4().hex[:12]
            rows.append({"id": row_id, **values, "created_at": now, "updated_at": now})
        return rows, violations + _duplicates(request)

    def GetPermission(
        self, request: pb.GetPermissionRequest, context: grpc.ServicerContext
    ) -> pb.GetPermissionResponse:
        permission_id = resource_id(request.name, "permissions")
        with self.db.begin() as connection:
            return pb.GetPermissionResponse(
                permission=_message(self._require(connection, permission_id))
            )

    def UpdatePermission(
        self, request: pb.UpdatePermissionRequest, context: grpc.ServicerContext
    ) -> pb.UpdatePermissionResponse:
        permission_id = resource_id(request.permission.name, "permissions", "permission.name")
        paths = mask_paths(request.update_mask, request.permission, UPDATABLE)
        new = self._values(request.permission)
        try:
            with self.db.begin() as connection:
                self.db.serialize(connection, PERMISSIONS_LOCK)  # the row read is the last
                row = self._require(connection, permission_id)
                values = {k: (new[k] if k in paths else row[k]) for k in new}
                self._validate(connection, values)
                connection.execute(
                    tables.permissions.update()
                    .where(tables.permissions.c.id == permission_id)
                    .values(**values, updated_at=self.clock())
                )
                row = self._require(connection, permission_id)
        except IntegrityError:
            raise AlreadyExistsError("another permission has this display name") from None
        return pb.UpdatePermissionResponse(permission=_message(row))

    def DeletePermission(
        self, request: pb.DeletePermissionRequest, context: grpc.ServicerContext
    ) -> pb.DeletePermissionResponse:
        permission_id = resource_id(request.name, "permissions")
        bindings = tables.account_permissions
        with self.db.begin() as connection:
            self.db.serialize(connection, PERMISSIONS_LOCK)  # none is bound meanwhile
            self._require(connection, permission_id)
            bound = connection.execute(
                sa.select(sa.func.count()).where(bindings.c.permission_id == permission_id)
            ).scalar_one()
            if bound and not request.force:
                raise FailedPreconditionError(
                    f"{bound} service account(s) are bound to permissions/{permission_id}; "
                    "unbind them or delete with force=true"
                )
            connection.execute(bindings.delete().where(bindings.c.permission_id == permission_id))
            connection.execute(
                tables.permissions.delete().where(tables.permissions.c.id == permission_id)
            )
        return pb.DeletePermissionResponse()
