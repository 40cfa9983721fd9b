"""Service accounts over the database: the first admin, creation, permission bindings;
their sessions are `sessions.Sessions` (`Accounts.sessions`)."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from auditline.account.v1 import service_account_pb2
from auditline.errors import InvalidArgumentError
from auditline.server import identity
from auditline.server.db import Database, require_row, tables
from auditline.server.iam import IamEvent
from auditline.server.sessions import LoginPolicy, Sessions

__all__ = ["PERMISSIONS_LOCK", "ROLE_ADMIN", "ROLE_AUDITOR", "ROLE_STANDARD", "Accounts"]

log = logging.getLogger("auditline.server")

ROLE_ADMIN = service_account_pb2.ROLE_ADMIN
ROLE_AUDITOR = service_account_pb2.ROLE_AUDITOR
ROLE_STANDARD = service_account_pb2.ROLE_STANDARD


def _now() -> float:
    return time.time()


# Held (`Database.serialize`) where permissions are changed, deleted, or bound to
# service accounts: two changes of one permission on two replicas each kept the whole
# row they had read (a revocation of write access was undone), and one was deleted as
# it was bound (found by a review helper).
PERMISSIONS_LOCK = "permissions"


class Accounts:
    def __init__(
        self,
        db: Database,
        *,
        token_ttl: float = 3600.0,
        policy: LoginPolicy | None = None,
        iam: Callable[[IamEvent], None] = lambda event: None,
        clock: Callable[[], float] = _now,
        hmac_key: bytes | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.sessions = Sessions(
            db,
            token_ttl=token_ttl,
            policy=policy or LoginPolicy(),
            iam=iam,
            clock=clock,
            hmac_key=hmac_key,
        )

    # --- bootstrap ---------------------------------------------------------------

    def bootstrap_admin(self, data_dir: Path, env: Mapping[str, str]) -> Path | None:
        """Create the first admin when there is no account; return the key file, if written."""
        with self.db.begin() as connection:
            count = connection.execute(
                sa.select(sa.func.count()).select_from(tables.service_accounts)
            ).scalar_one()
        if count:
            return None
        access_key = env.get("AUDITLINE_ADMIN_ACCESS_KEY") or identity.new_access_key()
        secret_key = env.get("AUDITLINE_ADMIN_SECRET_KEY") or identity.new_secret_key()
        # Longer keys would be refused at every login: refuse them now, not then.
        for name, value, limit in (
            ("AUDITLINE_ADMIN_ACCESS_KEY", access_key, identity.MAX_ACCESS_KEY_CHARS),
            ("AUDITLINE_ADMIN_SECRET_KEY", secret_key, identity.MAX_SECRET_KEY_CHARS),
        ):
            if len(value) > limit:
                raise ValueError(f"{name} must be at most {limit} characters")
        try:
            self.create(
                "admin",
                "created on first start",
                ROLE_ADMIN,
                [],
                "admin",
                access_key=access_key,
                secret_key=secret_key,
            )
        except IntegrityError:
            # Replicas starting together on one database: one of them made the admin
            # (its id is fixed), and wrote its keys in its own data directory.
            log.info("the first admin was created by another replica starting at once")
            return None
        if env.get("AUDITLINE_ADMIN_SECRET_KEY"):
            log.info("bootstrap admin %s created from AUDITLINE_ADMIN_* variables", access_key)
            return None
        path = data_dir / "admin-credentials"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"access_key={access_key}\nsecret_key={secret_key}\n")
        log.warning("bootstrap admin created; its keys are in %s (owner-only)", path)
        return path

    # --- accounts ----------------------------------------------------------------

    def create(
        self,
        display_name: str,
        description: str,
        role: int,
        permission_ids: list[str],
        account_id: str = "",
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        """Insert an account; return its row and its secret key (shown once)."""
        secret = secret_key or identity.new_secret_key()
        now = self.clock()
        row: dict[str, Any] = {
            "id": account_id or uuid.uuid4().hex[:12],
            "display_name": display_name,
            "description": description,
            "access_key": access_key or identity.new_access_key(),
            "secret_hash": identity.hash_secret(secret),
            "role": role,
            "enabled": True,
            "created_at": now,
            "updated_at": now,
        }
        with self.db.begin() as connection:
            self.db.serialize(connection, PERMISSIONS_LOCK)  # before the row it writes
            connection.execute(tables.service_accounts.insert().values(**row))
            self.bind(connection, row["id"], permission_ids)
        return row, secret

    def bind(self, connection: Connection, account_id: str, permission_ids: list[str]) -> None:
        """Bind exactly these permissions to the account, under the permissions' lock
        (taken by the caller before any row lock of its transaction, else here):
        each must exist when the transaction commits (else `InvalidArgumentError`, as
        when it is named), not be deleted meanwhile on another replica (found by a
        review helper)."""
        self.db.serialize(connection, PERMISSIONS_LOCK)
        wanted = list(dict.fromkeys(permission_ids))
        t = tables.permissions
        found = set(connection.execute(sa.select(t.c.id).where(t.c.id.in_(wanted))).scalars())
        missing = [f"permissions/{i}" for i in wanted if i not in found]
        if missing:
            raise InvalidArgumentError.field(
                "service_account.permissions",
                f"names permissions that do not exist: {', '.join(missing)}",
            )
        connection.execute(
            tables.account_permissions.delete().where(
                tables.account_permissions.c.account_id == account_id
            )
        )
        for permission_id in wanted:
            connection.execute(
                tables.account_permissions.insert().values(
                    account_id=account_id, permission_id=permission_id
                )
            )

    def permissions_of(
        self, connection: Connection, account_ids: list[str]
    ) -> dict[str, list[str]]:
        """The ids of the permissions bound to each account, in id order; one query."""
        t = tables.account_permissions
        bound: dict[str, list[str]] = {account_id: [] for account_id in account_ids}
        for account_id, permission_id in connection.execute(
            sa.select(t.c.account_id, t.c.permission_id)
            .where(t.c.account_id.in_(account_ids))
            .order_by(t.c.permission_id)
        ):
            bound[account_id].append(permission_id)
        return bound

    def require(self, connection: Connection, account_id: str) -> dict[str, Any]:
        return require_row(
            connection, tables.service_accounts.c.id, account_id, f"serviceAccounts/{account_id}"
        )
