"""Which role may call which method: every method of the contract, for every role.

The expectation is the product's own: the contract's open methods need no token, an
admin may call everything, and the call guard's table names what the other roles may
call besides (the services narrow standard accounts further, to themselves and to the
buckets their permissions name). This file only says, per method, how to build a
request that a caller the guard admits is answered OK.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from auditline.account.v1 import auth_pb2, bucket_pb2, permission_pb2, usage_pb2
from auditline.account.v1 import service_account_pb2 as sa_pb
from auditline.audit.v1 import audit_log_pb2, exporter_pb2, settings_pb2
from auditline.client import Client
from auditline.contract import OPEN_METHODS, SERVICES
from auditline.errors import AuditlineError, PermissionDeniedError, from_rpc_error
from auditline.server.guard import _ALLOWED  # private, but it is the table under test
from tests.support.account_server import (
    Server,
    new_account,
    new_bucket,
    new_name,
    new_permission,
)
from tests.support.clients import login
from tests.support.exported import DEFAULT_BUCKET
from tests.support.processes import wait_for

# Every method of the contract by its full name, `/package.Service/Method`.
METHODS: dict[str, MethodDescriptor] = {
    f"/{service.full_name}/{method.name}": method
    for service in SERVICES
    for method in service.methods
}
ROLES: dict[str, sa_pb.Role.ValueType] = {
    value.name: sa_pb.Role.Value(value.name)
    for value in sa_pb.Role.DESCRIPTOR.values
    if value.name != "ROLE_UNSPECIFIED"
}


def may_call(method: str, role: sa_pb.Role.ValueType) -> bool:
    """What the product says a role may call."""
    return (
        method in OPEN_METHODS
        or role == sa_pb.ROLE_ADMIN
        or role in _ALLOWED.get(method, frozenset())
    )


@dataclasses.dataclass
class Caller:
    account: sa_pb.ServiceAccount
    secret: str
    client: Client


@dataclasses.dataclass
class World:
    """What the requests name; made by the admin once per server."""

    server: Server
    callers: dict[sa_pb.Role.ValueType, Caller]  # a new account of each role
    bucket: str  # a bucket the standard caller's permission names
    exporter: str  # an exporter beside the default one
    first_event: str  # an event in the node's store: a tail from it has events at once

    @property
    def admin(self) -> Client:
        return self.server.admin

    def new_account(self) -> str:
        return new_account(self.admin)[0].name

    def new_permission(self) -> str:
        return new_permission(self.admin, bucket_scope=permission_pb2.BUCKET_SCOPE_ALL).name

    def new_bucket(self) -> str:
        return f"buckets/{new_bucket(self.admin)}"

    def new_exporter(self) -> str:
        request = exporter_pb2.CreateExporterRequest(
            exporter=exporter_pb2.Exporter(
                display_name=new_name("exp"), bucket=self.bucket, prefix=f"{new_name('p')}/"
            )
        )
        return self.admin.exporters.CreateExporter(request).exporter.name


Request = Callable[[World, Caller], Message]
_ACCOUNT = "/auditline.account.v1."
_AUDIT = "/auditline.audit.v1."

# How to build a request of each method that is answered OK when the caller is admitted.
REQUESTS: dict[str, Request] = {
    _ACCOUNT + "AuthService/Authenticate": lambda w, c: auth_pb2.AuthenticateRequest(
        access_key=c.account.access_key, secret_key=c.secret
    ),
    _ACCOUNT + "AuthService/ValidateToken": lambda w, c: auth_pb2.ValidateTokenRequest(
        token=c.client.token
    ),
    _ACCOUNT + "ServiceAccountService/ListServiceAccounts": lambda w, c: (
        sa_pb.ListServiceAccountsRequest()
    ),
    _ACCOUNT + "ServiceAccountService/CreateServiceAccount": lambda w, c: (
        sa_pb.CreateServiceAccountRequest(
            service_account=sa_pb.ServiceAccount(display_name=new_name("r"))
        )
    ),
    # Its own: a standard account may read only itself (test below).
    _ACCOUNT + "ServiceAccountService/GetServiceAccount": lambda w, c: (
        sa_pb.GetServiceAccountRequest(name=c.account.name)
    ),
    _ACCOUNT + "ServiceAccountService/UpdateServiceAccount": lambda w, c: (
        sa_pb.UpdateServiceAccountRequest(
            service_account=sa_pb.ServiceAccount(name="serviceAccounts/admin", description="d"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        )
    ),
    _ACCOUNT + "ServiceAccountService/DeleteServiceAccount": lambda w, c: (
        sa_pb.DeleteServiceAccountRequest(name=w.new_account())
    ),
    _ACCOUNT + "ServiceAccountService/EnableServiceAccount": lambda w, c: (
        sa_pb.EnableServiceAccountRequest(name="serviceAccounts/admin")
    ),
    _ACCOUNT + "ServiceAccountService/DisableServiceAccount": lambda w, c: (
        sa_pb.DisableServiceAccountRequest(name=w.new_account())
    ),
    # Ends every session of the caller's own account; its client logs in again.
    _ACCOUNT + "AuthService/Logout": lambda w, c: auth_pb2.LogoutRequest(
        service_account=c.account.name
    ),
    _ACCOUNT + "PermissionService/BatchCreatePermissions": lambda w, c: (
        permission_pb2.BatchCreatePermissionsRequest(
            requests=[
                permission_pb2.CreatePermissionRequest(
                    permission=permission_pb2.Permission(
                        display_name=new_name("perm"),
                        access=permission_pb2.ACCESS_READ,
                        bucket_scope=permission_pb2.BUCKET_SCOPE_ALL,
                    )
                )
            ]
        )
    ),
    _ACCOUNT + "PermissionService/ListPermissions": lambda w, c: (
        permission_pb2.ListPermissionsRequest()
    ),
    _ACCOUNT + "PermissionService/CreatePermission": lambda w, c: (
        permission_pb2.CreatePermissionRequest(
            permission=permission_pb2.Permission(
                display_name=new_name("perm"),
                access=permission_pb2.ACCESS_READ,
                bucket_scope=permission_pb2.BUCKET_SCOPE_ALL,
            )
        )
    ),
    _ACCOUNT + "PermissionService/GetPermission": lambda w, c: permission_pb2.GetPermissionRequest(
        name=w.new_permission()
    ),
    _ACCOUNT + "PermissionService/UpdatePermission": lambda w, c: (
        permission_pb2.UpdatePermissionRequest(
            permission=permission_pb2.Permission(name=w.new_permission(), description="d"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        )
    ),
    _ACCOUNT + "PermissionService/DeletePermission": lambda w, c: (
        permission_pb2.DeletePermissionRequest(name=w.new_permission())
    ),
    _ACCOUNT + "BucketService/CreateBucket": lambda w, c: bucket_pb2.CreateBucketRequest(
        bucket_id=new_name("bkt")
    ),
    # One the standard caller's permission names: the others are hidden from it.
    _ACCOUNT + "BucketService/GetBucket": lambda w, c: bucket_pb2.GetBucketRequest(
        name=f"buckets/{w.bucket}"
    ),
    _ACCOUNT + "BucketService/ListBuckets": lambda w, c: bucket_pb2.ListBucketsRequest(),
    _ACCOUNT + "BucketService/DeleteBucket": lambda w, c: bucket_pb2.DeleteBucketRequest(
        name=w.new_bucket()
    ),
    _ACCOUNT + "BucketService/SetObjectImmutability": lambda w, c: (
        bucket_pb2.SetObjectImmutabilityRequest(name=w.new_bucket())
    ),
    _ACCOUNT + "UsageService/GetCurrentUsage": lambda w, c: usage_pb2.GetCurrentUsageRequest(),
    _ACCOUNT + "UsageService/GetHistoricalUsage": lambda w, c: (
        usage_pb2.GetHistoricalUsageRequest()
    ),
    _AUDIT + "AuditLogService/ListEvents": lambda w, c: audit_log_pb2.ListEventsRequest(
        page_size=1
    ),
    _AUDIT + "AuditLogService/TailEvents": lambda w, c: audit_log_pb2.TailEventsRequest(
        since_event_id=w.first_event
    ),
    _AUDIT + "AuditLogService/GetEventCatalog": lambda w, c: audit_log_pb2.GetEventCatalogRequest(),
    _AUDIT + "AuditLogService/GetVerifierKeys": lambda w, c: audit_log_pb2.GetVerifierKeysRequest(),
    _AUDIT + "AuditLogService/QueryEvents": lambda w, c: audit_log_pb2.QueryEventsRequest(
        sql="SELECT count(*) FROM files"
    ),
    _AUDIT + "ExporterService/CreateExporter": lambda w, c: exporter_pb2.CreateExporterRequest(
        exporter=exporter_pb2.Exporter(
            display_name=new_name("exp"), bucket=w.bucket, prefix=f"{new_name('p')}/"
        )
    ),
    _AUDIT + "ExporterService/GetExporter": lambda w, c: exporter_pb2.GetExporterRequest(
        name=w.exporter
    ),
    _AUDIT + "ExporterService/ListExporters": lambda w, c: exporter_pb2.ListExportersRequest(),
    _AUDIT + "ExporterService/UpdateExporter": lambda w, c: exporter_pb2.UpdateExporterRequest(
        exporter=exporter_pb2.Exporter(name=w.exporter, prefix=f"{new_name('roles')}/"),
        update_mask=field_mask_pb2.FieldMask(paths=["prefix"]),
    ),
    _AUDIT + "ExporterService/DeleteExporter": lambda w, c: exporter_pb2.DeleteExporterRequest(
        name=w.new_exporter()
    ),
    _AUDIT + "AuditSettingsService/GetAuditSettings": lambda w, c: (
        settings_pb2.GetAuditSettingsRequest()
    ),
    _AUDIT + "AuditSettingsService/EnableAccountAuditLogs": lambda w, c: (
        settings_pb2.EnableAccountAuditLogsRequest()
    ),
    _AUDIT + "AuditSettingsService/DisableAccountAuditLogs": lambda w, c: (
        settings_pb2.DisableAccountAuditLogsRequest()
    ),
    # The target it has already: the other tests keep their log.
    _AUDIT + "AuditSettingsService/SetAuditTargetBucket": lambda w, c: (
        settings_pb2.SetAuditTargetBucketRequest(target_bucket=DEFAULT_BUCKET)
    ),
    _AUDIT + "AuditSettingsService/EnableBucketAuditLogging": lambda w, c: (
        settings_pb2.EnableBucketAuditLoggingRequest(bucket=w.bucket)
    ),
    _AUDIT + "AuditSettingsService/DisableBucketAuditLogging": lambda w, c: (
        settings_pb2.DisableBucketAuditLoggingRequest(bucket=w.bucket)
    ),
}

# What the admin does after a call, whoever made it, to leave the server as it was.
UNDO: dict[str, Callable[[World], object]] = {
    _AUDIT + "AuditSettingsService/DisableAccountAuditLogs": lambda w: (
        w.admin.settings.EnableAccountAuditLogs(settings_pb2.EnableAccountAuditLogsRequest())
    ),
}


def _stub(client: Client, service: ServiceDescriptor) -> Any:
    """The client's stub of `service` (the test fails when the client has none)."""
    module = service.file.name.removesuffix(".proto").replace("/", ".") + "_pb2_grpc"
    stubs = [
        stub
        for attribute, stub in vars(client).items()
        if not attribute.startswith("_")
        and type(stub).__module__ == module
        and type(stub).__name__ == f"{service.name}Stub"
    ]
    assert len(stubs) == 1, f"the client has no stub of {service.full_name}"
    return stubs[0]


def _call(client: Client, method: MethodDescriptor, request: Message) -> None:
    """Call `method`; of a stream, read its first response."""
    multicallable = getattr(_stub(client, method.containing_service), method.name)
    if not method.server_streaming:
        multicallable(request, timeout=30)
        return
    stream = multicallable(request, timeout=30)
    try:
        next(stream)
    except grpc.RpcError as error:  # a stream's errors are not typed by the client
        raise from_rpc_error(error) from None
    finally:
        stream.cancel()


def _first_event(admin: Client) -> str | None:
    events = admin.events.ListEvents(audit_log_pb2.ListEventsRequest(page_size=1)).events
    return events[0].event_id if events else None


@pytest.fixture(scope="module")
def world(server: Server) -> World:
    admin = server.admin
    bucket = new_bucket(admin)
    permission = new_permission(
        admin, bucket_scope=permission_pb2.BUCKET_SCOPE_NAMES, bucket_names=[bucket]
    )
    callers = {}
    for role in ROLES.values():
        permissions = (permission.name,) if role == sa_pb.ROLE_STANDARD else ()
        account, secret = new_account(admin, role, permissions)
        callers[role] = Caller(account, secret, login(server.target, account.access_key, secret))
    first_event = wait_for(
        lambda: _first_event(admin), timeout=30, what="an event in the node's store"
    )
    world = World(server, callers, bucket, "", first_event)
    world.exporter = world.new_exporter()
    return world


def test_the_cases_are_the_methods_of_the_contract() -> None:
    """A method added to the contract needs its request here; the guard's table and the
    open methods name only methods of the contract."""
    assert set(REQUESTS) == set(METHODS)
    assert set(UNDO) <= set(METHODS)
    assert set(_ALLOWED) <= set(METHODS)
    assert set(OPEN_METHODS) <= set(METHODS)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "method",
    list(METHODS),
    ids=[f"{m.containing_service.name}.{m.name}" for m in METHODS.values()],
)
def test_each_role_on_each_method(world: World, method: str, role: str) -> None:
    request = REQUESTS.get(method)
    assert request is not None, f"no request for {method}: add one to REQUESTS"
    caller = world.callers[ROLES[role]]
    built = request(world, caller)
    try:
        _call(caller.client, METHODS[method], built)
        code, message = grpc.StatusCode.OK, ""
    except AuditlineError as error:
        code, message = error.code(), error.message
    finally:
        undo = UNDO.get(method)
        if undo is not None:
            undo(world)
    expected = (
        grpc.StatusCode.OK if may_call(method, ROLES[role]) else grpc.StatusCode.PERMISSION_DENIED
    )
    assert code == expected, (method, role, code, message)


def test_standard_accounts_read_only_themselves(world: World) -> None:
    other = sa_pb.GetServiceAccountRequest(name="serviceAccounts/admin")
    with pytest.raises(PermissionDeniedError):
        world.callers[sa_pb.ROLE_STANDARD].client.accounts.GetServiceAccount(other)
    admin = world.callers[sa_pb.ROLE_ADMIN].client
    assert admin.accounts.GetServiceAccount(other).service_account.name == other.name


def test_every_account_may_read_itself_and_validate_its_token(world: World) -> None:
    for caller in world.callers.values():
        client = caller.client
        valid = client.auth.ValidateToken(
            auth_pb2.ValidateTokenRequest(token=client.token), timeout=30
        )
        assert valid.valid
        if valid.role == sa_pb.ROLE_AUDITOR:
            continue  # the auditor reads audit settings, exporters and events, nothing else
        own = client.accounts.GetServiceAccount(
            sa_pb.GetServiceAccountRequest(name=valid.service_account)
        )
        assert own.service_account.name == valid.service_account


def test_a_request_streaming_method_is_refused_not_left_unguarded() -> None:
    """The guard checks tokens and roles around unary and server-streaming handlers;
    a method of another shape must not run unchecked if one is ever added."""
    from auditline.server.guard import CallGuard

    ran: list[str] = []

    def behaviour(requests: Any, context: Any) -> None:
        ran.append("handler")

    handler: Any = grpc.stream_unary_rpc_method_handler(behaviour)
    details = dataclasses.make_dataclass("Details", ["method"])(
        "/auditline.account.v1.BucketService/Upload"
    )
    guarded = CallGuard(accounts=None).intercept_service(lambda _: handler, details)  # type: ignore[arg-type]

    class Aborted(Exception):
        pass

    class Context:
        def abort(self, code: grpc.StatusCode, details: str) -> None:
            ran.append(code.name)
            raise Aborted

    with pytest.raises(Aborted):
        guarded.stream_unary(iter(()), Context())
    assert ran == ["UNIMPLEMENTED"]
