"""Sessions: logins (with brute-force protection), tokens, and logouts, over the database."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable

import sqlalchemy as sa
from google.rpc import code_pb2
from sqlalchemy.engine import Connection

from auditline.errors import PermissionDeniedError, ResourceExhaustedError, UnauthenticatedError
from auditline.interceptor import hmac_value, source_of
from auditline.server import identity
from auditline.server.db import Database, tables, upsert
from auditline.server.iam import IamEvent

__all__ = ["Caller", "LoginPolicy", "Session", "Sessions"]

# What access keys look like (`identity.new_access_key`: "AK" and 18 more, upper case);
# secret keys and tokens (URL-safe base64, both cases) all but never do.
_ACCESS_KEY_FORM = re.compile(r"[A-Z0-9]{1,64}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Caller:
    """The authenticated service account of a call."""

    account_id: str
    display_name: str
    access_key: str
    role: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Session:
    """A valid session: its account, and when its token expires (epoch seconds). The
    token itself is known only when it is issued (`token`; the store keeps a hash)."""

    caller: Caller
    expires_at: float
    token: str = ""


@dataclasses.dataclass(frozen=True)
class LoginPolicy:
    """Brute-force protection: the seed's IAM rules, with a configurable block time."""

    per_account_failures: int = 10
    per_ip_failures: int = 100
    window_seconds: float = 24 * 3600
    block_seconds: float = 900


class Sessions:
    def __init__(
        self,
        db: Database,
        *,
        token_ttl: float,
        policy: LoginPolicy,
        iam: Callable[[IamEvent], None],
        clock: Callable[[], float],
        hmac_key: bytes | None = None,
    ) -> None:
        self.db = db
        self.token_ttl = token_ttl
        self.policy = policy
        self.iam = iam
        self.clock = clock
        self.hmac_key = hmac_key

    def recorded(self, access_key: str) -> str:
        """An unknown access key as failed logins and blocks record it: as given when
        it has an access key's form (upper-case letters and digits, as they are
        made), else its HMAC (`auditline audit-hash`). A secret key typed as the access key (the two
        swapped) was written to the IAM log, the exported files and the database
        (found by a review helper)."""
        if _ACCESS_KEY_FORM.fullmatch(access_key) or self.hmac_key is None:
            return access_key
        return hmac_value(self.hmac_key, access_key)

    def authenticate(self, access_key: str, secret_key: str, ip: str) -> Session:
        """A new session (its token and expiry), or an `AuditlineError` (and an IAM event)."""
        now = self.clock()
        accounts = tables.service_accounts
        # Failures are counted and blocked by source: an IPv6 address's /64 (a caller
        # moving from address to address within it guessed without end); the events
        # name the address.
        source = source_of(ip)
        with self.db.begin() as connection:
            row = (
                connection.execute(sa.select(accounts).where(accounts.c.access_key == access_key))
                .mappings()
                .first()
            )
            # An account's key as it is (public, and the same on every replica, whose
            # HMAC keys may differ: their counts must add up); an unknown one by its
            # form.
            recorded = access_key if row is not None else self.recorded(access_key)
            self._check_blocks(connection, recorded, ip, source, now)
        if not identity.verify_secret(secret_key, row["secret_hash"] if row else None):
            self._failed_login(
                recorded,
                row["display_name"] if row else "",
                ip,
                source,
                now,
                unknown=row is None,
            )
            raise UnauthenticatedError("wrong access key or secret key")
        assert row is not None
        if not row["enabled"]:
            self.iam(
                IamEvent(
                    code="f",
                    event_name="FailedLoginDisabledAccount",
                    description="the account is disabled",
                    access_key=access_key,
                    account_name=row["display_name"],
                    source_ip=ip,
                    status=code_pb2.PERMISSION_DENIED,
                    summarize=False,  # on its own past the rate: the rules read it
                )
            )
            raise PermissionDeniedError("the service account is disabled")
        token = identity.new_token()
        expires_at = now + self.token_ttl
        with self.db.begin() as connection:
            # Still enabled as the session is made, its row held until it commits: a
            # disable between the check above and here ended no session of this login,
            # which outlived it (found by a review helper, with two replicas). A
            # disable waits, then ends this session with the others.
            enabled = connection.execute(
                sa.select(accounts.c.enabled)
                .where(accounts.c.id == row["id"])
                .with_for_update(read=True)
            ).scalar()
            if not enabled:
                raise PermissionDeniedError("the service account is disabled")
            connection.execute(
                tables.sessions.insert().values(
                    token_hash=identity.hash_token(token),
                    account_id=row["id"],
                    expires_at=expires_at,
                )
            )
            connection.execute(
                tables.login_failures.delete().where(
                    tables.login_failures.c.ip == source,
                    tables.login_failures.c.access_key == recorded,
                )
            )
            connection.execute(tables.sessions.delete().where(tables.sessions.c.expires_at < now))
        self.iam(
            IamEvent(
                code="s",
                event_name="LoginSuccess",
                description="successful login",
                access_key=access_key,
                account_name=row["display_name"],
                source_ip=ip,
                status=code_pb2.OK,
            )
        )
        caller = Caller(
            account_id=row["id"],
            display_name=row["display_name"],
            access_key=access_key,
            role=row["role"],
        )
        return Session(caller=caller, expires_at=expires_at, token=token)

    def _check_blocks(
        self, connection: Connection, access_key: str, ip: str, source: str, now: float
    ) -> None:
        blocks = tables.ip_blocks
        block = connection.execute(
            sa.select(blocks.c.access_key, blocks.c.until)
            .where(
                blocks.c.ip == source,
                blocks.c.access_key.in_(["", access_key]),
                blocks.c.until > now,
            )
            .order_by(blocks.c.until.desc())
        ).first()
        if block is not None:
            code = "limit_mu" if block.access_key == "" else "limit_wc"
            self.iam(
                IamEvent(
                    code=code,
                    event_name="BlockedLoginAttempt",
                    description="login attempt from a blocked address",
                    access_key=access_key,
                    account_name="",
                    source_ip=ip,
                    status=code_pb2.RESOURCE_EXHAUSTED,
                )
            )
            wait = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(block.until))
            raise ResourceExhaustedError(
                f"too many failed logins from {ip}; logins from it are blocked until {wait}"
            )

    def _failed_login(
        self,
        access_key: str,
        account_name: str,
        ip: str,
        source: str,
        now: float,
        *,
        unknown: bool,
    ) -> None:
        failures, policy = tables.login_failures, self.policy
        if unknown:
            self.iam(
                IamEvent(
                    code="fu",
                    event_name="FailedLoginUnknownAccessKey",
                    description="unknown access key",
                    access_key=access_key,
                    account_name="",
                    source_ip=ip,
                    status=code_pb2.UNAUTHENTICATED,
                    summarize=False,  # on its own past the rate: the rules read it
                )
            )
        else:
            self.iam(
                IamEvent(
                    code="fp",
                    event_name="FailedLoginWrongSecret",
                    description="wrong secret key",
                    access_key=access_key,
                    account_name=account_name,
                    source_ip=ip,
                    status=code_pb2.UNAUTHENTICATED,
                    summarize=False,  # on its own past the rate: the rules read it
                )
            )
        since = now - policy.window_seconds
        with self.db.begin() as connection:
            connection.execute(failures.insert().values(ip=source, access_key=access_key, at=now))
            connection.execute(failures.delete().where(failures.c.at < since))
            # An account's failures count from its last block on: those before it
            # were paid for, but still count for the address (they were deleted, and
            # stopping at each account's limit sprayed every account without end).
            last_block = connection.execute(
                sa.select(tables.ip_blocks.c.until).where(
                    tables.ip_blocks.c.ip == source, tables.ip_blocks.c.access_key == access_key
                )
            ).scalar()
            account_since = since
            if last_block is not None:
                account_since = max(since, last_block - policy.block_seconds)
            per_account = connection.execute(
                sa.select(sa.func.count()).where(
                    failures.c.ip == source,
                    failures.c.access_key == access_key,
                    failures.c.at > account_since,
                )
            ).scalar_one()
            per_ip = connection.execute(
                sa.select(sa.func.count()).where(failures.c.ip == source, failures.c.at >= since)
            ).scalar_one()
            blocked_key = None
            if per_ip >= policy.per_ip_failures:
                blocked_key, code = "", "limit_mu"
            elif per_account >= policy.per_account_failures:
                blocked_key, code = access_key, "limit_wc"
            if blocked_key is not None:
                # One statement: replicas blocking the same address at once agree.
                upsert(
                    connection,
                    tables.ip_blocks,
                    {"ip": source, "access_key": blocked_key, "until": now + policy.block_seconds},
                    ("ip", "access_key"),
                )
                if blocked_key == "":  # the address's count starts again
                    connection.execute(failures.delete().where(failures.c.ip == source))
        if blocked_key is not None:
            scope = "every account" if blocked_key == "" else f"account {access_key}"
            self.iam(
                IamEvent(
                    code=code,
                    event_name="IpBlocked",
                    description=f"{source} blocked for {scope}",
                    access_key=access_key,
                    account_name=account_name,
                    source_ip=ip,
                    status=code_pb2.RESOURCE_EXHAUSTED,
                    summarize=False,
                )
            )

    def caller_for_token(self, token: str) -> Caller:
        """The caller a bearer token belongs to, or UnauthenticatedError."""
        found = self.validate(token)
        if found is None:
            raise UnauthenticatedError(
                "the session token is not valid (expired, unknown, "
                "or its account is disabled); authenticate again"
            )
        return found.caller

    def validate(self, token: str) -> Session | None:
        """The session of a token, or None when it is unknown, expired or its account
        disabled."""
        sessions, accounts = tables.sessions, tables.service_accounts
        with self.db.engine.connect() as connection:
            row = (
                connection.execute(
                    sa.select(
                        accounts.c.id,
                        accounts.c.display_name,
                        accounts.c.access_key,
                        accounts.c.role,
                        accounts.c.enabled,
                        sessions.c.expires_at,
                    )
                    .join(accounts, accounts.c.id == sessions.c.account_id)
                    .where(sessions.c.token_hash == identity.hash_token(token))
                )
                .mappings()
                .first()
            )
        if row is None or not row["enabled"] or row["expires_at"] <= self.clock():
            return None
        caller = Caller(
            account_id=row["id"],
            display_name=row["display_name"],
            access_key=row["access_key"],
            role=row["role"],
        )
        return Session(caller=caller, expires_at=float(row["expires_at"]))

    def end_sessions(self, connection: Connection, account_id: str) -> int:
        """End every session of an account; return how many there were."""
        ended = connection.execute(
            tables.sessions.delete().where(tables.sessions.c.account_id == account_id)
        )
        return int(ended.rowcount)

    def end_token(self, token: str) -> int:
        """End the session of one token (1, or 0 when it had ended already)."""
        with self.db.begin() as connection:
            ended = connection.execute(
                tables.sessions.delete().where(
                    tables.sessions.c.token_hash == identity.hash_token(token)
                )
            )
        return int(ended.rowcount)
