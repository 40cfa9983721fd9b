"""The account service through real gRPC channels against `auditline serve`.

Most tests share one server per object-store backend (filesystem and SeaweedFS)
and create uniquely named resources; tests that need other settings start their own.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from auditline.account.v1 import auth_pb2, bucket_pb2, permission_pb2, usage_pb2
from auditline.account.v1 import service_account_pb2 as sa_pb
from auditline.server.objectstore import FilesystemStore, ObjectLockedError, ObjectStore, S3Store
from tests.conftest import ServeFactory
from tests.support.api import Api, code_of, error_of, field_violations
from tests.support.exported import exported_events, exported_files
from tests.support.processes import wait_for
from tests.support.seaweedfs import SeaweedFS
from tests.support.serve import ServeProcess

ADMIN_KEY = "AKTESTADMIN"
ADMIN_SECRET = "admin-secret-" + uuid.uuid4().hex
Code = grpc.StatusCode


@dataclasses.dataclass
class Server:
    process: ServeProcess
    store: ObjectStore  # the same storage the server uses, reached directly
    admin: Api

    @property
    def target(self) -> str:
        return self.process.target


def _admin_env() -> dict[str, str]:
    return {"AUDITLINE_ADMIN_ACCESS_KEY": ADMIN_KEY, "AUDITLINE_ADMIN_SECRET_KEY": ADMIN_SECRET}


def _start(
    data_dir: Path, backend: str, request: pytest.FixtureRequest, *args: str
) -> tuple[ServeProcess, ObjectStore]:
    env = _admin_env()
    store: ObjectStore
    if backend == "s3":
        seaweed: SeaweedFS = request.getfixturevalue("seaweedfs")
        env |= {
            "AWS_ACCESS_KEY_ID": seaweed.access_key,
            "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
        }
        args = ("--object-store", f"s3://?endpoint={seaweed.endpoint}&region=us-east-1", *args)
        store = S3Store(client=seaweed.client())
    else:
        store = FilesystemStore(data_dir / "objects")
    process = ServeProcess(data_dir, args=["--usage-snapshot-interval", "0", *args], env=env)
    return process.start(), store


@pytest.fixture(scope="module", params=["file", "s3"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    process, store = _start(tmp_path_factory.mktemp("account") / "data", request.param, request)
    admin = Api(process.target).login(ADMIN_KEY, ADMIN_SECRET)
    yield Server(process, store, admin)
    admin.close()
    process.stop()


def _name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _account(
    api: Api, role: int = sa_pb.ROLE_STANDARD, permissions: tuple[str, ...] = ()
) -> tuple[sa_pb.ServiceAccount, str]:
    response = api.call(
        api.accounts.CreateServiceAccount,
        sa_pb.CreateServiceAccountRequest(
            service_account=sa_pb.ServiceAccount(
                display_name=_name("acct"),
                role=role,  # type: ignore[arg-type]
                permissions=permissions,
            )
        ),
    )
    return response.service_account, response.secret_key


def _login_as(server: Server, role: int, permissions: tuple[str, ...] = ()) -> Api:
    account, secret = _account(server.admin, role, permissions)
    return Api(server.target).login(account.access_key, secret)


def _bucket(api: Api, *, immutable: bool = False) -> str:
    name = _name("bkt")
    api.call(
        api.buckets.CreateBucket,
        bucket_pb2.CreateBucketRequest(bucket_id=name, immutable=immutable),
    )
    return name


# --- authentication -------------------------------------------------------------------


def test_authenticate_gives_a_token_that_validates(server: Server) -> None:
    response = server.admin.auth.Authenticate(
        auth_pb2.AuthenticateRequest(access_key=ADMIN_KEY, secret_key=ADMIN_SECRET), timeout=30
    )
    assert len(response.token) >= 40
    remaining = response.expire_time.ToSeconds() - time.time()
    assert 3500 < remaining <= 3600
    assert response.role == sa_pb.ROLE_ADMIN
    valid = server.admin.auth.ValidateToken(
        auth_pb2.ValidateTokenRequest(token=response.token), timeout=30
    )
    assert valid.valid
    assert valid.expire_time == response.expire_time
    assert valid.service_account == "serviceAccounts/admin"
    invalid = server.admin.auth.ValidateToken(
        auth_pb2.ValidateTokenRequest(token="not-a-token"), timeout=30
    )
    assert not invalid.valid


def test_wrong_keys_are_unauthenticated(server: Server) -> None:
    api = Api(server.target)
    for access_key, secret in ((ADMIN_KEY, "wrong"), ("AKNOBODY", "x")):
        error = error_of(
            lambda a=access_key, s=secret: api.auth.Authenticate(  # type: ignore[misc]
                auth_pb2.AuthenticateRequest(access_key=a, secret_key=s), timeout=30
            )
        )
        assert error.code() == Code.UNAUTHENTICATED
        assert error.details() == "wrong access key or secret key"  # same for both: no hint
    error = error_of(
        lambda: api.auth.Authenticate(
            auth_pb2.AuthenticateRequest(access_key=ADMIN_KEY), timeout=30
        )
    )
    assert error.code() == Code.INVALID_ARGUMENT
    assert field_violations(error) == [("secret_key", "is required")]


def test_calls_need_a_valid_bearer_token(server: Server) -> None:
    request = bucket_pb2.ListBucketsRequest()
    assert (
        code_of(lambda: Api(server.target).call(Api(server.target).buckets.ListBuckets, request))
        == Code.UNAUTHENTICATED
    )
    forged = Api(server.target, token="forged-token")
    assert code_of(lambda: forged.call(forged.buckets.ListBuckets, request)) == (
        Code.UNAUTHENTICATED
    )
    assert server.admin.call(server.admin.buckets.ListBuckets, request) is not None


def test_tokens_expire(serve: ServeFactory) -> None:
    process = serve("--token-ttl", "1", env=_admin_env())
    api = Api(process.target).login(ADMIN_KEY, ADMIN_SECRET)
    assert api.call(api.buckets.ListBuckets, bucket_pb2.ListBucketsRequest()) is not None

    def expired() -> bool | None:
        response = api.auth.ValidateToken(
            auth_pb2.ValidateTokenRequest(token=api.token), timeout=30
        )
        return True if not response.valid else None

    wait_for(expired, timeout=15, what="the token to expire", interval=0.2)
    assert (
        code_of(lambda: api.call(api.buckets.ListBuckets, bucket_pb2.ListBucketsRequest()))
        == Code.UNAUTHENTICATED
    )


# --- service accounts -----------------------------------------------------------------


def test_service_account_lifecycle(server: Server) -> None:
    admin = server.admin
    account, secret = _account(admin)
    assert len(secret) >= 43  # 256 bits, URL-safe base64
    assert account.access_key.startswith("AK")
    assert account.enabled
    name = account.name
    got = admin.call(
        admin.accounts.GetServiceAccount, sa_pb.GetServiceAccountRequest(name=name)
    ).service_account
    assert got == account

    updated = admin.call(
        admin.accounts.UpdateServiceAccount,
        sa_pb.UpdateServiceAccountRequest(
            service_account=sa_pb.ServiceAccount(
                name=name, description="new words", display_name="ignored"
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        ),
    ).service_account
    assert updated.description == "new words"
    assert updated.display_name == account.display_name

    error = error_of(
        lambda: admin.call(
            admin.accounts.UpdateServiceAccount,
            sa_pb.UpdateServiceAccountRequest(
                service_account=sa_pb.ServiceAccount(name=name),
                update_mask=field_mask_pb2.FieldMask(paths=["access_key"]),
            ),
        )
    )
    assert error.code() == Code.INVALID_ARGUMENT
    assert field_violations(error)[0][0] == "update_mask"

    duplicate = error_of(
        lambda: admin.call(
            admin.accounts.CreateServiceAccount,
            sa_pb.CreateServiceAccountRequest(
                service_account=sa_pb.ServiceAccount(display_name=account.display_name)
            ),
        )
    )
    assert duplicate.code() == Code.ALREADY_EXISTS

    admin.call(admin.accounts.DeleteServiceAccount, sa_pb.DeleteServiceAccountRequest(name=name))
    assert code_of(
        lambda: admin.call(
            admin.accounts.GetServiceAccount, sa_pb.GetServiceAccountRequest(name=name)
        )
    ) == (Code.NOT_FOUND)
    assert code_of(
        lambda: admin.call(
            admin.accounts.GetServiceAccount, sa_pb.GetServiceAccountRequest(name="accounts/x")
        )
    ) == (Code.INVALID_ARGUMENT)


def test_listing_pages(server: Server) -> None:
    admin = server.admin
    for _ in range(3):
        _account(admin)
    seen: list[str] = []
    token = ""
    while True:
        response = admin.call(
            admin.accounts.ListServiceAccounts,
            sa_pb.ListServiceAccountsRequest(page_size=2, page_token=token),
        )
        assert len(response.service_accounts) <= 2
        seen += [a.name for a in response.service_accounts]
        token = response.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) >= 4
    assert code_of(
        lambda: admin.call(
            admin.accounts.ListServiceAccounts, sa_pb.ListServiceAccountsRequest(page_token="junk")
        )
    ) == (Code.INVALID_ARGUMENT)


def test_disabling_an_account_stops_its_tokens_at_once(server: Server) -> None:
    admin = server.admin
    account, secret = _account(admin)
    user = Api(server.target).login(account.access_key, secret)
    own = sa_pb.GetServiceAccountRequest(name=account.name)
    assert user.call(user.accounts.GetServiceAccount, own).service_account.name == account.name
    admin.call(
        admin.accounts.DisableServiceAccount, sa_pb.DisableServiceAccountRequest(name=account.name)
    )
    assert code_of(lambda: user.call(user.accounts.GetServiceAccount, own)) == (
        Code.UNAUTHENTICATED
    )
    assert code_of(lambda: Api(server.target).login(account.access_key, secret)) == (
        Code.PERMISSION_DENIED
    )
    admin.call(
        admin.accounts.EnableServiceAccount, sa_pb.EnableServiceAccountRequest(name=account.name)
    )
    again = Api(server.target).login(account.access_key, secret)
    assert again.call(again.accounts.GetServiceAccount, own).service_account.enabled


def test_the_last_admin_cannot_be_removed(server: Server) -> None:
    admin = server.admin
    name = "serviceAccounts/admin"
    for call in (
        lambda: admin.call(
            admin.accounts.DisableServiceAccount, sa_pb.DisableServiceAccountRequest(name=name)
        ),
        lambda: admin.call(
            admin.accounts.DeleteServiceAccount, sa_pb.DeleteServiceAccountRequest(name=name)
        ),
    ):
        assert code_of(call) == Code.FAILED_PRECONDITION


def test_concurrent_creates_lose_nothing(server: Server) -> None:
    admin = server.admin
    names: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            for _ in range(5):
                names.append(_account(admin)[0].name)
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
        response = admin.call(
            admin.accounts.ListServiceAccounts,
            sa_pb.ListServiceAccountsRequest(page_size=1000, page_token=token),
        )
        listed |= {a.name for a in response.service_accounts}
        token = response.next_page_token
        if not token:
            break
    assert len(names) == 30
    assert set(names) <= listed


# --- permissions ----------------------------------------------------------------------


def _permission(api: Api, **fields: Any) -> permission_pb2.Permission:
    fields.setdefault("display_name", _name("perm"))
    fields.setdefault("access", permission_pb2.ACCESS_READ)
    response: permission_pb2.CreatePermissionResponse = api.call(
        api.permissions.CreatePermission,
        permission_pb2.CreatePermissionRequest(permission=permission_pb2.Permission(**fields)),
    )
    return response.permission


def test_permission_crud_and_validation(server: Server) -> None:
    admin = server.admin
    bucket = _bucket(admin)
    permission = _permission(
        admin, bucket_scope=permission_pb2.BUCKET_SCOPE_NAMES, bucket_names=[bucket]
    )
    assert list(permission.bucket_names) == [bucket]
    got = admin.call(
        admin.permissions.GetPermission, permission_pb2.GetPermissionRequest(name=permission.name)
    ).permission
    assert got == permission

    missing = error_of(
        lambda: _permission(
            admin, bucket_scope=permission_pb2.BUCKET_SCOPE_NAMES, bucket_names=["no-such-bucket-x"]
        )
    )
    assert missing.code() == Code.INVALID_ARGUMENT
    assert field_violations(missing)[0][0] == "permission.bucket_names"
    no_prefix = error_of(
        lambda: _permission(admin, bucket_scope=permission_pb2.BUCKET_SCOPE_PREFIX)
    )
    assert field_violations(no_prefix)[0][0] == "permission.bucket_prefix"
    assert code_of(
        lambda: _permission(
            admin,
            display_name=permission.display_name,
            bucket_scope=permission_pb2.BUCKET_SCOPE_ALL,
        )
    ) == (Code.ALREADY_EXISTS)

    updated = admin.call(
        admin.permissions.UpdatePermission,
        permission_pb2.UpdatePermissionRequest(
            permission=permission_pb2.Permission(
                name=permission.name, access=permission_pb2.ACCESS_READ_WRITE
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["access"]),
        ),
    ).permission
    assert updated.access == permission_pb2.ACCESS_READ_WRITE
    assert list(updated.bucket_names) == [bucket]

    _account(admin, permissions=(permission.name,))
    delete = permission_pb2.DeletePermissionRequest(name=permission.name)
    bound = error_of(lambda: admin.call(admin.permissions.DeletePermission, delete))
    assert bound.code() == Code.FAILED_PRECONDITION
    assert "force" in (bound.details() or "")
    admin.call(
        admin.permissions.DeletePermission,
        permission_pb2.DeletePermissionRequest(name=permission.name, force=True),
    )
    assert (
        code_of(
            lambda: admin.call(
                admin.permissions.GetPermission,
                permission_pb2.GetPermissionRequest(name=permission.name),
            )
        )
        == Code.NOT_FOUND
    )


# --- buckets --------------------------------------------------------------------------


def test_bucket_lifecycle_on_the_backend(server: Server) -> None:
    admin = server.admin
    name = _name("bkt")
    created = admin.call(
        admin.buckets.CreateBucket, bucket_pb2.CreateBucketRequest(bucket_id=name)
    ).bucket
    assert created.name == f"buckets/{name}"
    assert not created.immutable
    server.store.put_object(name, "file.txt", b"12345")  # the bucket is real
    assert (
        code_of(
            lambda: admin.call(
                admin.buckets.CreateBucket, bucket_pb2.CreateBucketRequest(bucket_id=name)
            )
        )
        == Code.ALREADY_EXISTS
    )
    not_empty = error_of(
        lambda: admin.call(
            admin.buckets.DeleteBucket, bucket_pb2.DeleteBucketRequest(name=created.name)
        )
    )
    assert not_empty.code() == Code.FAILED_PRECONDITION
    server.store.delete_object(name, "file.txt")
    admin.call(admin.buckets.DeleteBucket, bucket_pb2.DeleteBucketRequest(name=created.name))
    assert (
        code_of(
            lambda: admin.call(
                admin.buckets.GetBucket, bucket_pb2.GetBucketRequest(name=created.name)
            )
        )
        == Code.NOT_FOUND
    )


def test_bucket_names_follow_s3_rules(server: Server) -> None:
    admin = server.admin
    error = error_of(
        lambda: admin.call(
            admin.buckets.CreateBucket, bucket_pb2.CreateBucketRequest(bucket_id="Bad_Name")
        )
    )
    assert error.code() == Code.INVALID_ARGUMENT
    assert field_violations(error)[0][0] == "bucket_id"


def test_immutable_bucket_refuses_to_delete_locked_objects(server: Server) -> None:
    admin = server.admin
    name = _name("locked")
    bucket = admin.call(
        admin.buckets.CreateBucket,
        bucket_pb2.CreateBucketRequest(
            bucket_id=name,
            immutable=True,
            default_retention=bucket_pb2.Retention(
                mode=bucket_pb2.RETENTION_MODE_COMPLIANCE, days=1
            ),
        ),
    ).bucket
    assert bucket.immutable
    assert bucket.default_retention.days == 1
    server.store.put_object(name, "audit.jsonl.gz", b"events")  # locked by the default
    with pytest.raises(ObjectLockedError):
        server.store.delete_object(name, "audit.jsonl.gz")
    assert server.store.get_object(name, "audit.jsonl.gz") == b"events"
    bad = error_of(
        lambda: admin.call(
            admin.buckets.CreateBucket,
            bucket_pb2.CreateBucketRequest(
                bucket_id=_name("x"),
                immutable=True,
                default_retention=bucket_pb2.Retention(
                    mode=bucket_pb2.RETENTION_MODE_COMPLIANCE, days=0
                ),
            ),
        )
    )
    assert field_violations(bad)[0][0] == "default_retention.days"


def test_set_object_immutability_turns_lock_on(server: Server) -> None:
    admin = server.admin
    name = _bucket(admin)
    bucket = admin.call(
        admin.buckets.SetObjectImmutability,
        bucket_pb2.SetObjectImmutabilityRequest(
            name=f"buckets/{name}",
            default_retention=bucket_pb2.Retention(
                mode=bucket_pb2.RETENTION_MODE_GOVERNANCE, days=2
            ),
        ),
    ).bucket
    assert bucket.immutable
    assert bucket.default_retention.mode == bucket_pb2.RETENTION_MODE_GOVERNANCE
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    server.store.put_object(name, "k", b"v", retain_until=until, mode="COMPLIANCE")
    with pytest.raises(ObjectLockedError):
        server.store.delete_object(name, "k")


def test_the_audit_target_bucket_cannot_be_deleted(server: Server) -> None:
    admin = server.admin
    # Created, object-locked, on first start and made the target of the account logs.
    target = admin.call(
        admin.buckets.GetBucket, bucket_pb2.GetBucketRequest(name="buckets/auditline-audit-logs")
    ).bucket
    assert target.immutable
    error = error_of(
        lambda: admin.call(
            admin.buckets.DeleteBucket, bucket_pb2.DeleteBucketRequest(name=target.name)
        )
    )
    assert error.code() == Code.FAILED_PRECONDITION
    assert "audit log target" in (error.details() or "")


def test_standard_accounts_see_only_the_buckets_their_permissions_name(server: Server) -> None:
    admin = server.admin
    mine, other = _bucket(admin), _bucket(admin)
    permission = _permission(
        admin, bucket_scope=permission_pb2.BUCKET_SCOPE_NAMES, bucket_names=[mine]
    )
    user = _login_as(server, sa_pb.ROLE_STANDARD, (permission.name,))
    listed = [
        b.name for b in user.call(user.buckets.ListBuckets, bucket_pb2.ListBucketsRequest()).buckets
    ]
    assert listed == [f"buckets/{mine}"]
    assert (
        user.call(
            user.buckets.GetBucket, bucket_pb2.GetBucketRequest(name=f"buckets/{mine}")
        ).bucket.name
        == f"buckets/{mine}"
    )
    # A bucket hidden from this account and one that does not exist get the same
    # answer, so that names cannot be probed.
    hidden = error_of(
        lambda: user.call(
            user.buckets.GetBucket, bucket_pb2.GetBucketRequest(name=f"buckets/{other}")
        )
    )
    missing = error_of(
        lambda: user.call(
            user.buckets.GetBucket, bucket_pb2.GetBucketRequest(name="buckets/no-such-bucket-x")
        )
    )
    assert hidden.code() == missing.code() == Code.NOT_FOUND
    assert hidden.details() == f"buckets/{other} does not exist"
    assert missing.details() == "buckets/no-such-bucket-x does not exist"


# --- usage ----------------------------------------------------------------------------


def test_usage_now_and_by_month(server: Server) -> None:
    admin = server.admin
    name = _bucket(admin)
    server.store.put_object(name, "a", b"x" * 100)
    server.store.put_object(name, "b", b"y" * 50)
    current = admin.call(admin.usage.GetCurrentUsage, usage_pb2.GetCurrentUsageRequest())
    mine = [b for b in current.buckets if b.bucket == name]
    assert [(b.bytes, b.object_count) for b in mine] == [(150, 2)]
    assert current.total_bytes >= 150
    history = admin.call(admin.usage.GetHistoricalUsage, usage_pb2.GetHistoricalUsageRequest())
    now = datetime.datetime.now(datetime.UTC)
    this_month = [m for m in history.months if (m.year, m.month) == (now.year, now.month)]
    assert this_month
    assert this_month[0].peak_bytes >= current.total_bytes


# --- roles ----------------------------------------------------------------------------

ROLE_CASES: list[tuple[str, Callable[[Api, Server], Any], set[int]]] = [
    # (method, call, roles allowed besides admin)
    (
        "ListServiceAccounts",
        lambda a, s: a.call(a.accounts.ListServiceAccounts, sa_pb.ListServiceAccountsRequest()),
        set(),
    ),
    (
        "CreateServiceAccount",
        lambda a, s: a.call(
            a.accounts.CreateServiceAccount,
            sa_pb.CreateServiceAccountRequest(
                service_account=sa_pb.ServiceAccount(display_name=_name("r"))
            ),
        ),
        set(),
    ),
    (
        "GetServiceAccount(other)",
        lambda a, s: a.call(
            a.accounts.GetServiceAccount,
            sa_pb.GetServiceAccountRequest(name="serviceAccounts/admin"),
        ),
        set(),
    ),
    (
        "UpdateServiceAccount",
        lambda a, s: a.call(
            a.accounts.UpdateServiceAccount,
            sa_pb.UpdateServiceAccountRequest(
                service_account=sa_pb.ServiceAccount(name="serviceAccounts/admin", description="d"),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            ),
        ),
        set(),
    ),
    (
        "DeleteServiceAccount",
        lambda a, s: a.call(
            a.accounts.DeleteServiceAccount,
            sa_pb.DeleteServiceAccountRequest(name=_account(s.admin)[0].name),
        ),
        set(),
    ),
    (
        "EnableServiceAccount",
        lambda a, s: a.call(
            a.accounts.EnableServiceAccount,
            sa_pb.EnableServiceAccountRequest(name="serviceAccounts/admin"),
        ),
        set(),
    ),
    (
        "DisableServiceAccount",
        lambda a, s: a.call(
            a.accounts.DisableServiceAccount,
            sa_pb.DisableServiceAccountRequest(name=_account(s.admin)[0].name),
        ),
        set(),
    ),
    (
        "ListPermissions",
        lambda a, s: a.call(a.permissions.ListPermissions, permission_pb2.ListPermissionsRequest()),
        set(),
    ),
    (
        "CreatePermission",
        lambda a, s: _permission(a, bucket_scope=permission_pb2.BUCKET_SCOPE_ALL),
        set(),
    ),
    (
        "GetPermission",
        lambda a, s: a.call(
            a.permissions.GetPermission,
            permission_pb2.GetPermissionRequest(
                name=_permission(s.admin, bucket_scope=permission_pb2.BUCKET_SCOPE_ALL).name
            ),
        ),
        set(),
    ),
    (
        "UpdatePermission",
        lambda a, s: a.call(
            a.permissions.UpdatePermission,
            permission_pb2.UpdatePermissionRequest(
                permission=permission_pb2.Permission(
                    name=_permission(s.admin, bucket_scope=permission_pb2.BUCKET_SCOPE_ALL).name,
                    description="d",
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            ),
        ),
        set(),
    ),
    (
        "DeletePermission",
        lambda a, s: a.call(
            a.permissions.DeletePermission,
            permission_pb2.DeletePermissionRequest(
                name=_permission(s.admin, bucket_scope=permission_pb2.BUCKET_SCOPE_ALL).name
            ),
        ),
        set(),
    ),
    ("CreateBucket", lambda a, s: _bucket(a), set()),
    (
        "ListBuckets",
        lambda a, s: a.call(a.buckets.ListBuckets, bucket_pb2.ListBucketsRequest()),
        {sa_pb.ROLE_STANDARD},
    ),
    (
        "DeleteBucket",
        lambda a, s: a.call(
            a.buckets.DeleteBucket,
            bucket_pb2.DeleteBucketRequest(name=f"buckets/{_bucket(s.admin)}"),
        ),
        set(),
    ),
    (
        "SetObjectImmutability",
        lambda a, s: a.call(
            a.buckets.SetObjectImmutability,
            bucket_pb2.SetObjectImmutabilityRequest(name=f"buckets/{_bucket(s.admin)}"),
        ),
        set(),
    ),
    (
        "GetCurrentUsage",
        lambda a, s: a.call(a.usage.GetCurrentUsage, usage_pb2.GetCurrentUsageRequest()),
        set(),
    ),
    (
        "GetHistoricalUsage",
        lambda a, s: a.call(a.usage.GetHistoricalUsage, usage_pb2.GetHistoricalUsageRequest()),
        set(),
    ),
]


@pytest.fixture(scope="module")
def role_callers(server: Server) -> dict[int, Api]:
    return {
        role: _login_as(server, role)
        for role in (sa_pb.ROLE_ADMIN, sa_pb.ROLE_AUDITOR, sa_pb.ROLE_STANDARD)
    }


@pytest.mark.parametrize("role", ["ROLE_ADMIN", "ROLE_AUDITOR", "ROLE_STANDARD"])
@pytest.mark.parametrize("case", [c[0] for c in ROLE_CASES])
def test_each_role_on_each_method(
    server: Server, role_callers: dict[int, Api], role: str, case: str
) -> None:
    _, call, others = next(c for c in ROLE_CASES if c[0] == case)
    role_number = sa_pb.Role.Value(role)
    code = code_of(lambda: call(role_callers[role_number], server))
    allowed = role_number == sa_pb.ROLE_ADMIN or role_number in others
    assert code == (Code.OK if allowed else Code.PERMISSION_DENIED), (case, role, code)


def test_every_account_may_read_itself_and_validate_its_token(
    server: Server, role_callers: dict[int, Api]
) -> None:
    for api in role_callers.values():
        valid = api.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=api.token), timeout=30)
        assert valid.valid
        if valid.role == sa_pb.ROLE_AUDITOR:
            continue  # the auditor reads audit settings, exporters and events, nothing else
        own = api.call(
            api.accounts.GetServiceAccount,
            sa_pb.GetServiceAccountRequest(name=valid.service_account),
        )
        assert own.service_account.name == valid.service_account


# --- brute force, bootstrap, secrets --------------------------------------------------


# These tests look at each failed login's IAM event: none may be summarized.
EVERY_LOGIN_RECORDED = ("--audit-unauthenticated-burst", "100000")


def test_brute_force_blocks_one_account_then_lifts(serve: ServeFactory) -> None:
    process = serve("--login-block-seconds", "3", *EVERY_LOGIN_RECORDED, env=_admin_env())
    api = Api(process.target)
    admin = api.login(ADMIN_KEY, ADMIN_SECRET)
    victim, secret = _account(admin)
    bystander, bystander_secret = _account(admin)

    def attempt(access_key: str, secret_key: str) -> grpc.StatusCode:
        return code_of(
            lambda: api.auth.Authenticate(
                auth_pb2.AuthenticateRequest(access_key=access_key, secret_key=secret_key),
                timeout=30,
            )
        )

    for _ in range(10):
        assert attempt(victim.access_key, "wrong") == Code.UNAUTHENTICATED
    blocked = error_of(
        lambda: api.auth.Authenticate(
            auth_pb2.AuthenticateRequest(access_key=victim.access_key, secret_key=secret),
            timeout=30,
        )
    )
    assert blocked.code() == Code.RESOURCE_EXHAUSTED
    assert "blocked until" in (blocked.details() or "")
    # Only that account is blocked for this address.
    assert attempt(bystander.access_key, bystander_secret) == Code.OK
    wait_for(
        lambda: True if attempt(victim.access_key, secret) == Code.OK else None,
        timeout=20,
        what="the block to lift",
        interval=0.5,
    )
    assert process.terminate() == 0
    events = exported_events(process.data_dir)
    iam = [(e["EventName"], e["IamCode"]) for e in events if e["LogType"] == "LOG_TYPE_IAM"]
    assert ("FailedLoginWrongSecret", "fp") in iam
    assert ("IpBlocked", "limit_wc") in iam
    assert ("BlockedLoginAttempt", "limit_wc") in iam
    assert ("LoginSuccess", "s") in iam


def test_brute_force_across_accounts_blocks_the_address(serve: ServeFactory) -> None:
    process = serve("--login-block-seconds", "600", *EVERY_LOGIN_RECORDED, env=_admin_env())
    api = Api(process.target)
    for attempt in range(100):
        assert (
            code_of(
                lambda n=attempt: api.auth.Authenticate(  # type: ignore[misc]
                    auth_pb2.AuthenticateRequest(access_key=f"AKUNKNOWN{n}", secret_key="x"),
                    timeout=30,
                )
            )
            == Code.UNAUTHENTICATED
        )
    # Now even the admin's right keys are refused from this address.
    assert code_of(lambda: api.login(ADMIN_KEY, ADMIN_SECRET)) == Code.RESOURCE_EXHAUSTED
    assert process.terminate() == 0
    iam = [
        (e["EventName"], e["IamCode"])
        for e in exported_events(process.data_dir)
        if e["LogType"] == "LOG_TYPE_IAM"
    ]
    assert ("FailedLoginUnknownAccessKey", "fu") in iam
    assert ("IpBlocked", "limit_mu") in iam
    assert ("BlockedLoginAttempt", "limit_mu") in iam


def test_bootstrap_without_keys_writes_an_owner_only_file(serve: ServeFactory) -> None:
    process = serve()
    path = process.data_dir / "admin-credentials"
    assert path.stat().st_mode & 0o777 == 0o600
    values = dict(line.split("=", 1) for line in path.read_text().splitlines())
    assert str(path) in process.log()
    assert values["secret_key"] not in process.log()
    api = Api(process.target).login(values["access_key"], values["secret_key"])
    assert api.call(api.buckets.ListBuckets, bucket_pb2.ListBucketsRequest()) is not None


def test_no_secret_or_token_in_the_database_logs_or_errors(serve: ServeFactory) -> None:
    process = serve(env=_admin_env())
    admin = Api(process.target).login(ADMIN_KEY, ADMIN_SECRET)
    account, secret = _account(admin)
    user = Api(process.target).login(account.access_key, secret)
    errors = [
        error_of(
            lambda: Api(process.target, token=user.token + "x").call(
                admin.buckets.ListBuckets, bucket_pb2.ListBucketsRequest()
            )
        )
    ]
    errors.append(error_of(lambda: Api(process.target).login(account.access_key, secret + "x")))
    assert process.terminate() == 0
    secrets = [ADMIN_SECRET, secret, admin.token, user.token]
    haystacks = {
        "database": b"".join(p.read_bytes() for p in process.data_dir.glob("auditline.db*")),
        "audit spool": (process.data_dir / "audit" / "spool.db").read_bytes(),
        "exported audit files": b"".join(p.read_bytes() for p in exported_files(process.data_dir)),
        "exported audit events": json.dumps(exported_events(process.data_dir)).encode(),
        "server log": process.log().encode(),
        "errors": "".join(f"{e.details()} {e}" for e in errors).encode(),
    }
    for where, haystack in haystacks.items():
        assert haystack, where
        for value in secrets:
            assert value.encode() not in haystack, f"a secret is in the {where}"
