"""ServiceAccountService: create, read, update, delete, enable and disable accounts."""

from __future__ import annotations

from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from auditline.account.v1 import service_account_pb2 as pb
from auditline.account.v1 import service_account_pb2_grpc
from auditline.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    PermissionDeniedError,
)
from auditline.server.accounts import PERMISSIONS_LOCK, ROLE_ADMIN, ROLE_STANDARD, Accounts
from auditline.server.db import tables
from auditline.server.guard import current_caller
from auditline.server.services._common import (
    check_display_name,
    check_new_id,
    list_page,
    mask_paths,
    next_page_token,
    page,
    resource_id,
    timestamp,
)

UPDATABLE = ("display_name", "description", "role", "permissions")
ROLES = {pb.ROLE_ADMIN, pb.ROLE_AUDITOR, pb.ROLE_STANDARD}


class ServiceAccountServicer(service_account_pb2_grpc.ServiceAccountServiceServicer):
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.db = accounts.db

    def _message(self, connection: Connection, row: dict[str, Any]) -> pb.ServiceAccount:
        return self._messages(connection, [row])[0]

    def _messages(
        self, connection: Connection, rows: list[dict[str, Any]]
    ) -> list[pb.ServiceAccount]:
        bound = self.accounts.permissions_of(connection, [row["id"] for row in rows])
        return [
            pb.ServiceAccount(
                name=f"serviceAccounts/{row['id']}",
                display_name=row["display_name"],
                description=row["description"],
                access_key=row["access_key"],
                role=row["role"],
                enabled=row["enabled"],
                permissions=[f"permissions/{p}" for p in bound[row["id"]]],
                create_time=timestamp(row["created_at"]),
                update_time=timestamp(row["updated_at"]),
            )
            for row in rows
        ]

    @staticmethod
    def _permission_ids(names: list[str]) -> list[str]:
        """The permissions' ids (whether they exist, `Accounts.bind` checks under the
        permissions' lock)."""
        return [resource_id(name, "permissions", "service_account.permissions") for name in names]

    def ListServiceAccounts(
        self, request: pb.ListServiceAccountsRequest, context: grpc.ServicerContext
    ) -> pb.ListServiceAccountsResponse:
        offset, limit = page(request.page_size, request.page_token)
        with self.db.begin() as connection:
            rows, total = list_page(connection, tables.service_accounts, offset, limit)
            accounts = self._messages(connection, rows)
        return pb.ListServiceAccountsResponse(
            service_accounts=accounts,
            next_page_token=next_page_token(offset, limit, len(accounts), total),
        )

    def CreateServiceAccount(
        self, request: pb.CreateServiceAccountRequest, context: grpc.ServicerContext
    ) -> pb.CreateServiceAccountResponse:
        account = request.service_account
        check_display_name(account.display_name, "service_account.display_name")
        check_new_id(request.service_account_id, "service_account_id")
        role = account.role or pb.ROLE_STANDARD
        if role not in ROLES:
            raise InvalidArgumentError.field("service_account.role", "is not a known role")
        permission_ids = self._permission_ids(list(account.permissions))
        try:
            row, secret = self.accounts.create(
                account.display_name,
                account.description,
                role,
                permission_ids,
                request.service_account_id,
            )
        except IntegrityError:
            raise AlreadyExistsError(
                "a service account with this display name or id exists already"
            ) from None
        with self.db.begin() as connection:
            message = self._message(connection, row)
        return pb.CreateServiceAccountResponse(service_account=message, secret_key=secret)

    def GetServiceAccount(
        self, request: pb.GetServiceAccountRequest, context: grpc.ServicerContext
    ) -> pb.GetServiceAccountResponse:
        account_id = resource_id(request.name, "serviceAccounts")
        caller = current_caller()
        if caller.role == ROLE_STANDARD and caller.account_id != account_id:
            raise PermissionDeniedError("a standard service account may only read itself")
        with self.db.begin() as connection:
            row = self.accounts.require(connection, account_id)
            return pb.GetServiceAccountResponse(service_account=self._message(connection, row))

    def UpdateServiceAccount(
        self, request: pb.UpdateServiceAccountRequest, context: grpc.ServicerContext
    ) -> pb.UpdateServiceAccountResponse:
        account = request.service_account
        account_id = resource_id(account.name, "serviceAccounts", "service_account.name")
        paths = mask_paths(request.update_mask, account, UPDATABLE)
        values: dict[str, Any] = {}
        if "display_name" in paths:
            check_display_name(account.display_name, "service_account.display_name")
            values["display_name"] = account.display_name
        if "description" in paths:
            values["description"] = account.description
        if "role" in paths:
            if account.role not in ROLES:
                raise InvalidArgumentError.field("service_account.role", "is not a known role")
            values["role"] = account.role
        try:
            with self.db.begin() as connection:
                if "permissions" in paths:
                    # First, before any row lock (the admins' below, the account's
                    # own): taken after them, it made a lock cycle with a binding of
                    # another admin (found by a review helper).
                    self.db.serialize(connection, PERMISSIONS_LOCK)
                row = self.accounts.require(connection, account_id)
                if row["role"] == ROLE_ADMIN and values.get("role", ROLE_ADMIN) != ROLE_ADMIN:
                    self._keep_an_admin(connection, account_id)
                if values:
                    values["updated_at"] = self.accounts.clock()
                    connection.execute(
                        tables.service_accounts.update()
                        .where(tables.service_accounts.c.id == account_id)
                        .values(**values)
                    )
                if "permissions" in paths:
                    ids = self._permission_ids(list(account.permissions))
                    self.accounts.bind(connection, account_id, ids)
                message = self._message(connection, self.accounts.require(connection, account_id))
        except IntegrityError:
            raise AlreadyExistsError("another service account has this display name") from None
        return pb.UpdateServiceAccountResponse(service_account=message)

    def _keep_an_admin(self, connection: Connection, account_id: str) -> None:
        """Refuse to disable, demote or delete the last enabled admin. The enabled
        admins' rows are locked until the change commits (PostgreSQL; SQLite has one
        writer): two admins disabling each other at once, each counting the other
        still enabled, left none (found by a review helper, with two replicas)."""
        t = tables.service_accounts
        admins = connection.execute(
            sa.select(t.c.id)
            .where(t.c.role == ROLE_ADMIN, t.c.enabled.is_(True))
            .order_by(t.c.id)  # locked in one order: no deadlock between two changes
            .with_for_update()
        ).scalars()
        others = [admin for admin in admins if admin != account_id]
        if not others:
            raise FailedPreconditionError(
                "this is the last enabled admin account; make another admin first"
            )

    def DeleteServiceAccount(
        self, request: pb.DeleteServiceAccountRequest, context: grpc.ServicerContext
    ) -> pb.DeleteServiceAccountResponse:
        account_id = resource_id(request.name, "serviceAccounts")
        with self.db.begin() as connection:
            row = self.accounts.require(connection, account_id)
            if row["role"] == ROLE_ADMIN:
                self._keep_an_admin(connection, account_id)
            connection.execute(
                tables.service_accounts.delete().where(tables.service_accounts.c.id == account_id)
            )
        return pb.DeleteServiceAccountResponse()

    def _set_enabled(self, name: str, enabled: bool) -> pb.ServiceAccount:
        account_id = resource_id(name, "serviceAccounts")
        with self.db.begin() as connection:
            row = self.accounts.require(connection, account_id)
            if not enabled and row["role"] == ROLE_ADMIN:
                self._keep_an_admin(connection, account_id)
            connection.execute(
                tables.service_accounts.update()
                .where(tables.service_accounts.c.id == account_id)
                .values(enabled=enabled, updated_at=self.accounts.clock())
            )
            if not enabled:
                self.accounts.sessions.end_sessions(connection, account_id)
            return self._message(connection, self.accounts.require(connection, account_id))

    def EnableServiceAccount(
        self, request: pb.EnableServiceAccountRequest, context: grpc.ServicerContext
    ) -> pb.EnableServiceAccountResponse:
        return pb.EnableServiceAccountResponse(
            service_account=self._set_enabled(request.name, True)
        )

    def DisableServiceAccount(
        self, request: pb.DisableServiceAccountRequest, context: grpc.ServicerContext
    ) -> pb.DisableServiceAccountResponse:
        return pb.DisableServiceAccountResponse(
            service_account=self._set_enabled(request.name, False)
        )


__all__ = ["ServiceAccountServicer"]
