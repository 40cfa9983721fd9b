"""A test client of the account API: generated stubs plus a bearer token."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from auditline.account.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    bucket_pb2_grpc,
    permission_pb2_grpc,
    service_account_pb2_grpc,
    usage_pb2_grpc,
)


class Api:
    def __init__(self, target: str, token: str = "") -> None:
        self.target = target
        self.token = token
        self.channel = grpc.insecure_channel(target)
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channel)
        self.accounts = service_account_pb2_grpc.ServiceAccountServiceStub(self.channel)
        self.permissions = permission_pb2_grpc.PermissionServiceStub(self.channel)
        self.buckets = bucket_pb2_grpc.BucketServiceStub(self.channel)
        self.usage = usage_pb2_grpc.UsageServiceStub(self.channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def call(self, method: Callable[..., Any], request: Any) -> Any:
        return method(request, metadata=self.metadata, timeout=30)

    def login(self, access_key: str, secret_key: str) -> Api:
        response = self.auth.Authenticate(
            auth_pb2.AuthenticateRequest(access_key=access_key, secret_key=secret_key), timeout=30
        )
        return Api(self.target, response.token)

    def login_as_admin(self, env: Mapping[str, str]) -> Api:
        """Log in with the first admin's keys from a server's environment."""
        return self.login(env["AUDITLINE_ADMIN_ACCESS_KEY"], env["AUDITLINE_ADMIN_SECRET_KEY"])

    def close(self) -> None:
        self.channel.close()


def error_of(call: Callable[[], Any]) -> grpc.RpcError:
    """The RpcError a call raises (AssertionError when it succeeds)."""
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded")


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The BadRequest field violations in an error's rich details."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    found = []
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [(v.field, v.description) for v in bad.field_violations]
    return found
