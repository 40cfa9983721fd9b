"""ServiceAccountService: the accounts' lifecycle, pages, enabling and disabling, the
last admin, and concurrent creates."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from google.protobuf import field_mask_pb2

from auditline.account.v1 import service_account_pb2 as sa_pb
from auditline.client import Client
from auditline.errors import (
    AlreadyExistsError,
    AuditlineError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from auditline.server.accounts import ROLE_ADMIN, ROLE_STANDARD, Accounts
from auditline.server.db import Database, tables
from auditline.server.services.service_accounts import ServiceAccountServicer
from tests.conftest import ServeFactory
from tests.support.account_server import ADMIN_KEY, ADMIN_SECRET, Server, admin_env, new_account
from tests.support.clients import login
from tests.support.postgres import PostgreSQL


def test_service_account_lifecycle(server: Server) -> None:
    accounts = server.admin.accounts
    account, secret = new_account(server.admin)
    assert len(secret) >= 43  # 256 bits, URL-safe base64
    assert account.access_key.startswith("AK")
    assert account.enabled
    name = account.name
    got = accounts.GetServiceAccount(sa_pb.GetServiceAccountRequest(name=name)).service_account
    assert got == account

    updated = accounts.UpdateServiceAccount(
        sa_pb.UpdateServiceAccountRequest(
            service_account=sa_pb.ServiceAccount(
                name=name, description="new words", display_name="ignored"
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        )
    ).service_account
    assert updated.description == "new words"
    assert updated.display_name == account.display_name

    with pytest.raises(InvalidArgumentError) as error:
        accounts.UpdateServiceAccount(
            sa_pb.UpdateServiceAccountRequest(
                service_account=sa_pb.ServiceAccount(name=name),
                update_mask=field_mask_pb2.FieldMask(paths=["access_key"]),
            )
        )
    assert error.value.field_violations[0][0] == "update_mask"

    with pytest.raises(AlreadyExistsError):
        accounts.CreateServiceAccount(
            sa_pb.CreateServiceAccountRequest(
                service_account=sa_pb.ServiceAccount(display_name=account.display_name)
            )
        )

    accounts.DeleteServiceAccount(sa_pb.DeleteServiceAccountRequest(name=name))
    with pytest.raises(NotFoundError):
        accounts.GetServiceAccount(sa_pb.GetServiceAccountRequest(name=name))
    with pytest.raises(InvalidArgumentError):
        accounts.GetServiceAccount(sa_pb.GetServiceAccountRequest(name="accounts/x"))


def test_listing_pages(server: Server) -> None:
    accounts = server.admin.accounts
    for _ in range(3):
        new_account(server.admin)
    seen: list[str] = []
    token = ""
    while True:
        response = accounts.ListServiceAccounts(
            sa_pb.ListServiceAccountsRequest(page_size=2, page_token=token)
        )
        assert len(response.service_accounts) <= 2
        seen += [a.name for a in response.service_accounts]
        token = response.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) >= 4
    with pytest.raises(InvalidArgumentError):
        accounts.ListServiceAccounts(sa_pb.ListServiceAccountsRequest(page_token="junk"))


def test_disabling_an_account_stops_its_tokens_at_once(server: Server) -> None:
    admin = server.admin
    account, secret = new_account(admin)
    # One token, never renewed: what disabling does to a token already handed out.
    user = login(server.target, account.access_key, secret, renew=False)
    # A client with the keys, which logs in again when its token is refused.
    renewing = login(server.target, account.access_key, secret)
    own = sa_pb.GetServiceAccountRequest(name=account.name)
    assert user.accounts.GetServiceAccount(own).service_account.name == account.name
    admin.accounts.DisableServiceAccount(sa_pb.DisableServiceAccountRequest(name=account.name))
    with pytest.raises(UnauthenticatedError):
        user.accounts.GetServiceAccount(own)
    with pytest.raises(PermissionDeniedError):
        login(server.target, account.access_key, secret)
    with pytest.raises(PermissionDeniedError):  # its login again is refused
        renewing.accounts.GetServiceAccount(own)
    admin.accounts.EnableServiceAccount(sa_pb.EnableServiceAccountRequest(name=account.name))
    again = login(server.target, account.access_key, secret)
    assert again.accounts.GetServiceAccount(own).service_account.enabled


def test_the_last_admin_cannot_be_removed(server: Server) -> None:
    accounts = server.admin.accounts
    name = "serviceAccounts/admin"
    with pytest.raises(FailedPreconditionError):
        accounts.DisableServiceAccount(sa_pb.DisableServiceAccountRequest(name=name))
    with pytest.raises(FailedPreconditionError):
        accounts.DeleteServiceAccount(sa_pb.DeleteServiceAccountRequest(name=name))


def test_concurrent_creates_lose_nothing(server: Server) -> None:
    names: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            for _ in range(5):
                names.append(new_account(server.admin)[0].name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    listed = set()
    token = ""
    while True:
        response = server.admin.accounts.ListServiceAccounts(
            sa_pb.ListServiceAccountsRequest(page_size=1000, page_token=token)
        )
        listed |= {a.name for a in response.service_accounts}
        token = response.next_page_token
        if not token:
            break
    assert len(names) == 30
    assert set(names) <= listed


def _disable(name: str, by: Client, together: threading.Barrier, outcomes: dict[str, str]) -> None:
    together.wait(30)
    try:
        by.accounts.DisableServiceAccount(sa_pb.DisableServiceAccountRequest(name=name))
        outcomes[name] = "disabled"
    except AuditlineError as error:
        # The last admin; or its caller's session ended by the other change.
        outcomes[name] = error.code().name


def test_two_admins_disabling_each_other_at_once_leave_one(
    serve: ServeFactory, postgres: PostgreSQL
) -> None:
    """On PostgreSQL, with concurrent transactions (as replicas, or one node's threads,
    make them): each admin's change counted the other still enabled, both committed,
    and no admin was left (found by a review helper, with two replicas). The enabled
    admins' rows are locked now: one change wins, the other is refused."""
    process = serve("--database-url", postgres.new_database(), env=admin_env())
    for _ in range(4):
        first = login(process.target, ADMIN_KEY, ADMIN_SECRET)
        account, secret = new_account(first, sa_pb.ROLE_ADMIN)
        second = login(process.target, account.access_key, secret)
        together = threading.Barrier(2)
        outcomes: dict[str, str] = {}
        calls = (("serviceAccounts/admin", second), (account.name, first))
        threads = [
            threading.Thread(target=_disable, args=(*call, together, outcomes)) for call in calls
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert list(outcomes.values()).count("disabled") == 1, outcomes
        if outcomes["serviceAccounts/admin"] == "disabled":  # the second is left
            second.accounts.EnableServiceAccount(
                sa_pb.EnableServiceAccountRequest(name="serviceAccounts/admin")
            )
            first = login(process.target, ADMIN_KEY, ADMIN_SECRET)
        first.accounts.DeleteServiceAccount(sa_pb.DeleteServiceAccountRequest(name=account.name))


def _login_into(target: str, access_key: str, secret: str, got: list[Client | str]) -> None:
    try:
        got.append(login(target, access_key, secret, renew=False))
    except AuditlineError as error:
        got.append(error.code().name)


def test_a_login_racing_a_disable_keeps_no_session(
    serve: ServeFactory, postgres: PostgreSQL
) -> None:
    """The login checked the account enabled, then its secret (slow, on purpose), then
    made the session in another transaction: a disable in between ended no session of
    it, and its token worked again once the account was enabled (found by a review
    helper, with two replicas)."""
    process = serve("--database-url", postgres.new_database(), env=admin_env())
    admin = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    for _ in range(4):
        account, secret = new_account(admin)
        got: list[Client | str] = []
        racing = threading.Thread(
            target=_login_into, args=(process.target, account.access_key, secret, got)
        )
        racing.start()
        admin.accounts.DisableServiceAccount(sa_pb.DisableServiceAccountRequest(name=account.name))
        racing.join(60)
        admin.accounts.EnableServiceAccount(sa_pb.EnableServiceAccountRequest(name=account.name))
        (outcome,) = got
        if isinstance(outcome, Client):  # logged in before the disable: its session ended
            with pytest.raises(UnauthenticatedError):
                outcome.accounts.GetServiceAccount(
                    sa_pb.GetServiceAccountRequest(name=account.name)
                )
        else:
            assert outcome == "PERMISSION_DENIED"


def test_demoting_and_binding_two_admins_at_once_makes_no_lock_cycle(
    postgres: PostgreSQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The permissions' lock was taken after the admins' rows were locked (demoting
    one): a binding of another admin, holding that lock, waited for its own row, and
    PostgreSQL found a deadlock (found by a review helper). The demotion is held just
    before it takes the lock, so that the binding comes in between."""
    db = Database(postgres.new_database())
    accounts = Accounts(db)
    first, _ = accounts.create("admin-a", "", ROLE_ADMIN, [])
    second, _ = accounts.create("admin-b", "", ROLE_ADMIN, [])
    accounts.create("admin-c", "", ROLE_ADMIN, [])
    with db.begin() as connection:
        for name in ("p1", "p2"):
            connection.execute(
                tables.permissions.insert().values(
                    id=name,
                    display_name=name,
                    description="",
                    bucket_scope=1,
                    bucket_prefix="",
                    bucket_names=[],
                    access=1,
                    created_at=0.0,
                    updated_at=0.0,
                )
            )
    servicer = ServiceAccountServicer(accounts)
    serialize = Database.serialize
    demoting = threading.Event()

    def held(connection: Any, what: str) -> None:
        if threading.current_thread().name == "demote" and what == "permissions":
            demoting.set()
            time.sleep(0.5)  # the binding below runs meanwhile
        serialize(connection, what)

    monkeypatch.setattr(Database, "serialize", staticmethod(held))
    outcomes: dict[str, str] = {}

    def update(thread: str, account: dict[str, Any], paths: list[str], **fields: Any) -> None:
        request = sa_pb.UpdateServiceAccountRequest(
            service_account=sa_pb.ServiceAccount(name=f"serviceAccounts/{account['id']}", **fields),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
        try:
            servicer.UpdateServiceAccount(request, None)  # type: ignore[arg-type]
            outcomes[thread] = "OK"
        except Exception as error:
            outcomes[thread] = type(error).__name__

    demote = threading.Thread(
        target=update,
        name="demote",
        args=("demote", first, ["role", "permissions"]),
        kwargs={"role": ROLE_STANDARD, "permissions": ["permissions/p1"]},
    )
    demote.start()
    assert demoting.wait(30)
    update("bind", second, ["permissions"], permissions=["permissions/p2"])
    demote.join(30)
    db.close()
    assert outcomes == {"demote": "OK", "bind": "OK"}
