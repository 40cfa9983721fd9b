"""`Client` and `AsyncClient`: stubs of every service, with the session handled.

Both authenticate with the service account's keys (or use a given token), attach
`authorization: Bearer <token>` to every call, authenticate again shortly before
the token expires or when the server says it has, and raise typed errors
(`auditline.errors`, one class per gRPC code) instead of bare `grpc.RpcError`s: from
unary calls, and (sync client) from a stream's iteration. With neither keys nor a
token a client is anonymous: it reaches the methods that need no token
(`auditline.contract.OPEN_METHODS`) and is told UNAUTHENTICATED by the others.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import grpc

from auditline.account.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    bucket_pb2_grpc,
    permission_pb2_grpc,
    service_account_pb2_grpc,
    usage_pb2_grpc,
)
from auditline.audit.v1 import audit_log_pb2_grpc, exporter_pb2_grpc, settings_pb2_grpc
from auditline.contract import OPEN_METHODS
from auditline.errors import AuditlineError, from_rpc_error

__all__ = ["AsyncClient", "Client"]

_REFRESH_BEFORE = 30.0  # seconds before expiry a new token is fetched

# Calls go round the addresses a target gives (several replicas in
# `ipv4:HOST:PORT,HOST:PORT`, or a DNS name with several addresses); with one
# address, this is that address.
_CHANNEL_OPTIONS = [
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
    # Connections of its own: gRPC shares them among a process's channels by default,
    # and a new client would then fail at once, UNAVAILABLE, while a connection to a
    # server that stopped at the same address waits out its reconnect backoff.
    ("grpc.use_local_subchannel_pool", 1),
]


class _Session:
    """The keys and the current token; shared by the sync and asyncio clients."""

    def __init__(self, access_key: str | None, secret_key: str | None, token: str | None) -> None:
        if bool(access_key) != bool(secret_key):
            raise ValueError("give access_key and secret_key together (or a token, or neither)")
        self.access_key = access_key
        self.secret_key = secret_key
        self.token = token or ""
        self.expires_at = float("inf") if token else 0.0
        self.lock = threading.Lock()

    @property
    def can_reauthenticate(self) -> bool:
        return bool(self.access_key and self.secret_key)

    def stale(self) -> bool:
        return not self.token or time.time() > self.expires_at - _REFRESH_BEFORE

    def request(self) -> auth_pb2.AuthenticateRequest:
        return auth_pb2.AuthenticateRequest(
            access_key=self.access_key or "", secret_key=self.secret_key or ""
        )

    def store(self, response: auth_pb2.AuthenticateResponse) -> None:
        self.token = response.token
        self.expires_at = response.expire_time.ToNanoseconds() / 1e9


def _authorized(details: Any, token: str) -> list[tuple[str, str]]:
    metadata = [(k, v) for k, v in (details.metadata or ()) if k != "authorization"]
    if token:  # an anonymous client sends none
        metadata.append(("authorization", f"Bearer {token}"))
    return metadata


def _with_token(details: Any, token: str) -> Any:
    return _Details(
        details.method,
        details.timeout,
        _authorized(details, token),
        details.credentials,
        details.wait_for_ready,
        details.compression,
    )


def _aio_with_token(details: Any, token: str) -> Any:
    metadata: Any = _authorized(details, token)  # the stubs want Metadata; a list works
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _Details(grpc.ClientCallDetails):
    def __init__(
        self,
        method: str,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
    ) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


class _SyncAuth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, client: Client) -> None:
        self.client = client

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if details.method in OPEN_METHODS:
            call = continuation(details, request)
        else:
            call = continuation(_with_token(details, self.client._token()), request)
            if (
                call.code() == grpc.StatusCode.UNAUTHENTICATED
                and self.client._session.can_reauthenticate
            ):
                token = self.client._token(force=True)
                call = continuation(_with_token(details, token), request)
        if call.code() != grpc.StatusCode.OK:
            raise from_rpc_error(call)
        return call

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return _TypedStream(continuation(_with_token(details, self.client._token()), request))


class _TypedStream:
    """A server stream whose iteration raises the typed error; otherwise the call
    itself (`cancel`, `code`, `details`, …)."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> _TypedStream:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


def _credentials(
    tls: bool,
    root_certificates: bytes | None,
    private_key: bytes | None,
    certificate_chain: bytes | None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials when asked for (system roots, or a private CA; mTLS with a key)."""
    if not (tls or root_certificates):
        return None
    return grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)


_STUBS: dict[str, Any] = {
    "auth": auth_pb2_grpc.AuthServiceStub,
    "accounts": service_account_pb2_grpc.ServiceAccountServiceStub,
    "permissions": permission_pb2_grpc.PermissionServiceStub,
    "buckets": bucket_pb2_grpc.BucketServiceStub,
    "usage": usage_pb2_grpc.UsageServiceStub,
    "settings": settings_pb2_grpc.AuditSettingsServiceStub,
    "exporters": exporter_pb2_grpc.ExporterServiceStub,
    "events": audit_log_pb2_grpc.AuditLogServiceStub,
}


class _Stubs:
    """A stub of every service, on one channel (each client declares their types)."""

    def _attach_stubs(self, channel: Any) -> None:
        for name, stub in _STUBS.items():
            setattr(self, name, stub(channel))


class Client(_Stubs):
    """A synchronous client of every auditline service.

    `Client("127.0.0.1:50051", access_key=..., secret_key=...)`, or several replicas
    in turn with `Client("ipv4:127.0.0.1:50051,127.0.0.1:50052", ...)`; `tls=True` uses the
    system roots, or pass `root_certificates` (PEM) for a private CA, and
    `private_key` / `certificate_chain` for mutual TLS.
    """

    auth: auth_pb2_grpc.AuthServiceStub
    accounts: service_account_pb2_grpc.ServiceAccountServiceStub
    permissions: permission_pb2_grpc.PermissionServiceStub
    buckets: bucket_pb2_grpc.BucketServiceStub
    usage: usage_pb2_grpc.UsageServiceStub
    settings: settings_pb2_grpc.AuditSettingsServiceStub
    exporters: exporter_pb2_grpc.ExporterServiceStub
    events: audit_log_pb2_grpc.AuditLogServiceStub

    def __init__(
        self,
        target: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        self.target = target
        self._session = _Session(access_key, secret_key, token)
        credentials = _credentials(tls, root_certificates, private_key, certificate_chain)
        self._base = (
            grpc.secure_channel(target, credentials, _CHANNEL_OPTIONS)
            if credentials
            else grpc.insecure_channel(target, _CHANNEL_OPTIONS)
        )
        self._authenticator = auth_pb2_grpc.AuthServiceStub(self._base)
        self.channel = grpc.intercept_channel(self._base, _SyncAuth(self))
        self._attach_stubs(self.channel)

    @property
    def token(self) -> str:
        """The current session token (authenticating first when there is none)."""
        return self._token()

    def _token(self, force: bool = False) -> str:
        session = self._session
        with session.lock:
            if (force or session.stale()) and session.can_reauthenticate:
                try:
                    session.store(self._authenticator.Authenticate(session.request(), timeout=30))
                except grpc.RpcError as error:
                    raise from_rpc_error(error) from None
            return session.token

    def close(self) -> None:
        self._base.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _AsyncAuth(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
):
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if details.method in OPEN_METHODS:
            call = await continuation(details, request)
        else:
            token = await self.client._token()
            call = await continuation(_aio_with_token(details, token), request)
            if (
                await call.code() == grpc.StatusCode.UNAUTHENTICATED
                and self.client._session.can_reauthenticate
            ):
                token = await self.client._token(force=True)
                call = await continuation(_aio_with_token(details, token), request)
        code = await call.code()
        if code != grpc.StatusCode.OK:
            raise _aio_error(code, await call.details(), await call.trailing_metadata())
        return call

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        token = await self.client._token()
        return await continuation(_aio_with_token(details, token), request)


def _aio_error(code: grpc.StatusCode, message: str | None, metadata: Any) -> AuditlineError:
    """The typed error of a failed asyncio call, from what the call reported."""

    class _Failed(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return code

        def details(self) -> str:
            return message or ""

        def trailing_metadata(self) -> Any:
            return tuple(metadata or ())

    return from_rpc_error(_Failed())


class AsyncClient(_Stubs):
    """The asyncio flavour of `Client`; use `async with AsyncClient(...) as client`."""

    auth: auth_pb2_grpc.AuthServiceAsyncStub
    accounts: service_account_pb2_grpc.ServiceAccountServiceAsyncStub
    permissions: permission_pb2_grpc.PermissionServiceAsyncStub
    buckets: bucket_pb2_grpc.BucketServiceAsyncStub
    usage: usage_pb2_grpc.UsageServiceAsyncStub
    settings: settings_pb2_grpc.AuditSettingsServiceAsyncStub
    exporters: exporter_pb2_grpc.ExporterServiceAsyncStub
    events: audit_log_pb2_grpc.AuditLogServiceAsyncStub

    def __init__(
        self,
        target: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        self.target = target
        self._session = _Session(access_key, secret_key, token)
        interceptors = [_AsyncAuth(self)]
        # Tokens are fetched on a channel of their own: a call made from inside an
        # interceptor of the same asyncio channel would wait on itself.
        credentials = _credentials(tls, root_certificates, private_key, certificate_chain)
        if credentials is not None:
            self.channel = grpc.aio.secure_channel(
                target, credentials, _CHANNEL_OPTIONS, interceptors=interceptors
            )
            self._auth_channel = grpc.aio.secure_channel(target, credentials, _CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.insecure_channel(
                target, _CHANNEL_OPTIONS, interceptors=interceptors
            )
            self._auth_channel = grpc.aio.insecure_channel(target, _CHANNEL_OPTIONS)
        self._authenticator = auth_pb2_grpc.AuthServiceStub(self._auth_channel)
        self._attach_stubs(self.channel)

    async def _token(self, force: bool = False) -> str:
        session = self._session
        if (force or session.stale()) and session.can_reauthenticate:
            try:
                response = await self._authenticator.Authenticate(session.request(), timeout=30)
            except grpc.aio.AioRpcError as error:
                raise _aio_error(error.code(), error.details(), error.trailing_metadata()) from None
            session.store(response)
        return session.token

    async def close(self) -> None:
        await self.channel.close()
        await self._auth_channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
