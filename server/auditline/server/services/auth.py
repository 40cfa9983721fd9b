"""AuthService: keys for session tokens, and logging out."""

from __future__ import annotations

import grpc
from google.rpc import code_pb2

from auditline.account.v1 import auth_pb2, auth_pb2_grpc, service_account_pb2
from auditline.errors import AuditlineError, InvalidArgumentError, PermissionDeniedError
from auditline.interceptor import TrustedProxies, set_principal
from auditline.server import identity
from auditline.server.accounts import ROLE_ADMIN, Accounts
from auditline.server.guard import bearer_token, current_caller
from auditline.server.iam import IamEvent
from auditline.server.services._common import resource_id, timestamp


def _required(value: str, field: str, limit: int) -> None:
    """INVALID_ARGUMENT unless a credential field is given and no longer than `limit`:
    checked before any lookup, so that nothing longer reaches the database or the IAM
    events (the call's own event records the refusal)."""
    if not value:
        raise InvalidArgumentError.field(field, "is required")
    if len(value) > limit:
        raise InvalidArgumentError.field(field, f"must be at most {limit} characters")


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, accounts: Accounts, trusted_proxies: TrustedProxies) -> None:
        self.accounts = accounts
        # The same caller address the audit events name: behind a trusted load
        # balancer, failed logins block the client, not the balancer.
        self.trusted_proxies = trusted_proxies

    def _caller_address(self, context: grpc.ServicerContext) -> str:
        return self.trusted_proxies.caller(context.peer(), context.invocation_metadata())[0]

    def Authenticate(
        self, request: auth_pb2.AuthenticateRequest, context: grpc.ServicerContext
    ) -> auth_pb2.AuthenticateResponse:
        _required(request.access_key, "access_key", identity.MAX_ACCESS_KEY_CHARS)
        _required(request.secret_key, "secret_key", identity.MAX_SECRET_KEY_CHARS)
        ip = self._caller_address(context)
        session = self.accounts.sessions.authenticate(request.access_key, request.secret_key, ip)
        caller = session.caller
        set_principal(caller.display_name, caller.access_key)
        return auth_pb2.AuthenticateResponse(
            token=session.token,
            expire_time=timestamp(session.expires_at),
            service_account=f"serviceAccounts/{caller.account_id}",
            role=service_account_pb2.Role.ValueType(caller.role),
        )

    def ValidateToken(
        self, request: auth_pb2.ValidateTokenRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ValidateTokenResponse:
        _required(request.token, "token", identity.MAX_TOKEN_CHARS)
        found = self.accounts.sessions.validate(request.token)
        ip = self._caller_address(context)
        if found is None:
            self.accounts.sessions.iam(
                IamEvent(
                    code="tv",
                    event_name="TokenValidated",
                    description="the token is not valid",
                    access_key="",
                    account_name="",
                    source_ip=ip,
                    status=code_pb2.UNAUTHENTICATED,
                    method="ValidateToken",
                )
            )
            return auth_pb2.ValidateTokenResponse(valid=False)
        caller = found.caller
        set_principal(caller.display_name, caller.access_key)
        self.accounts.sessions.iam(
            IamEvent(
                code="tv",
                event_name="TokenValidated",
                description="the token is valid",
                access_key=caller.access_key,
                account_name=caller.display_name,
                source_ip=ip,
                status=code_pb2.OK,
                method="ValidateToken",
            )
        )
        return auth_pb2.ValidateTokenResponse(
            valid=True,
            expire_time=timestamp(found.expires_at),
            service_account=f"serviceAccounts/{caller.account_id}",
            role=service_account_pb2.Role.ValueType(caller.role),
        )

    def Logout(
        self, request: auth_pb2.LogoutRequest, context: grpc.ServicerContext
    ) -> auth_pb2.LogoutResponse:
        caller = current_caller()
        ip = self._caller_address(context)

        def record(code: str, description: str, status: int) -> None:
            self.accounts.sessions.iam(
                IamEvent(
                    code=code,
                    event_name="LogoutSuccess" if code == "slo" else "LogoutFailed",
                    description=description,
                    access_key=caller.access_key,
                    account_name=caller.display_name,
                    source_ip=ip,
                    status=status,
                    method="Logout",
                )
            )

        try:
            ended, whose = self._end_sessions(request, context, caller.account_id, caller.role)
        except AuditlineError as error:
            record("flo", error.message, error.code().value[0])
            raise
        record("slo", f"{ended} session(s) of {whose} ended", code_pb2.OK)
        return auth_pb2.LogoutResponse(ended_sessions=ended)

    def _end_sessions(
        self,
        request: auth_pb2.LogoutRequest,
        context: grpc.ServicerContext,
        caller_id: str,
        caller_role: int,
    ) -> tuple[int, str]:
        """End the sessions the request names; (how many, whose)."""
        if not request.service_account:
            return self.accounts.sessions.end_token(bearer_token(context)), "this token"
        account_id = resource_id(request.service_account, "serviceAccounts", "service_account")
        if account_id != caller_id and caller_role != ROLE_ADMIN:
            raise PermissionDeniedError(
                "only an admin may end the sessions of another service account"
            )
        with self.accounts.db.begin() as connection:
            self.accounts.require(connection, account_id)
            ended = self.accounts.sessions.end_sessions(connection, account_id)
        return ended, f"serviceAccounts/{account_id}"
