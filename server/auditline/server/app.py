"""Assembles the gRPC server: account and audit services, health, reflection."""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import uuid
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from auditline.account.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    bucket_pb2,
    bucket_pb2_grpc,
    permission_pb2,
    permission_pb2_grpc,
    service_account_pb2,
    service_account_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from auditline.audit.v1 import (
    audit_log_pb2,
    audit_log_pb2_grpc,
    exporter_pb2,
    exporter_pb2_grpc,
    settings_pb2,
    settings_pb2_grpc,
)
from auditline.interceptor import AuditInterceptor, JsonLinesSink
from auditline.server.config import Settings, split_list
from auditline.server.reflection import enable_reflection

__all__ = ["SERVICES", "AuditlineServer", "ServiceRegistration"]

log = logging.getLogger("auditline.server")


@dataclasses.dataclass(frozen=True)
class ServiceRegistration:
    """One service of the product: its full name and how to add it to a server."""

    name: str
    add_to_server: Callable[[Any, grpc.Server], None]
    # None while the service is not implemented: gRPC then answers its methods
    # with UNIMPLEMENTED, and reflection still describes it.
    servicer_factory: Callable[[], object] | None


def _registration(
    descriptor: Any, add: Callable[[Any, grpc.Server], None], factory: Callable[[], object] | None
) -> ServiceRegistration:
    return ServiceRegistration(descriptor.full_name, add, factory)


SERVICES: tuple[ServiceRegistration, ...] = (
    _registration(
        auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        None,
    ),
    _registration(
        usage_pb2.DESCRIPTOR.services_by_name["UsageService"],
        usage_pb2_grpc.add_UsageServiceServicer_to_server,
        None,
    ),
    _registration(
        permission_pb2.DESCRIPTOR.services_by_name["PermissionService"],
        permission_pb2_grpc.add_PermissionServiceServicer_to_server,
        None,
    ),
    _registration(
        service_account_pb2.DESCRIPTOR.services_by_name["ServiceAccountService"],
        service_account_pb2_grpc.add_ServiceAccountServiceServicer_to_server,
        None,
    ),
    _registration(
        bucket_pb2.DESCRIPTOR.services_by_name["BucketService"],
        bucket_pb2_grpc.add_BucketServiceServicer_to_server,
        None,
    ),
    _registration(
        settings_pb2.DESCRIPTOR.services_by_name["AuditSettingsService"],
        settings_pb2_grpc.add_AuditSettingsServiceServicer_to_server,
        None,
    ),
    _registration(
        exporter_pb2.DESCRIPTOR.services_by_name["ExporterService"],
        exporter_pb2_grpc.add_ExporterServiceServicer_to_server,
        None,
    ),
    _registration(
        audit_log_pb2.DESCRIPTOR.services_by_name["AuditLogService"],
        audit_log_pb2_grpc.add_AuditLogServiceServicer_to_server,
        None,
    ),
)


def _prepare_data_dir(path: Path) -> str:
    """Create the data directory (owner-only) and return this node's stable id."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    node_file = path / "node-id"
    if not node_file.exists():
        node_file.write_text(uuid.uuid4().hex[:16] + "\n")
    return node_file.read_text().strip()


def load_hmac_key(settings: Settings, *, create: bool = True) -> bytes:
    """The audit HMAC key: from --audit-hmac-key-file, else created once in the data dir."""
    path = settings.audit_hmac_key_file or settings.data_dir / "audit-hmac.key"
    if not path.exists():
        if settings.audit_hmac_key_file is not None or not create:
            raise FileNotFoundError(f"no audit HMAC key at {path}")
        # O_EXCL: two servers sharing a data dir never overwrite each other's key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
    key = bytes.fromhex(path.read_text().strip())
    if len(key) < 16:
        raise ValueError(f"the audit HMAC key in {path} is shorter than 16 bytes")
    return key


def _server_credentials(settings: Settings) -> grpc.ServerCredentials:
    assert settings.tls_cert is not None
    assert settings.tls_key is not None
    key_pair = (settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [key_pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class AuditlineServer:
    """The service on one listening address. `start`, then `stop` once."""

    def __init__(
        self, settings: Settings, *, interceptors: Sequence[grpc.ServerInterceptor] = ()
    ) -> None:
        self.settings = settings
        self.node_id = _prepare_data_dir(settings.data_dir)
        self._executor = futures.ThreadPoolExecutor(
            max_workers=settings.max_workers, thread_name_prefix="auditline-rpc"
        )
        # Until the durable spool lands, events go to a JSON Lines file.
        self.audit_sink = JsonLinesSink(settings.data_dir / "audit" / "events.jsonl")
        self.audit = AuditInterceptor(
            self.audit_sink,
            node_id=self.node_id,
            hmac_key=load_hmac_key(settings),
            trusted_proxies=split_list(settings.trusted_proxies),
            metadata_allowlist=split_list(settings.audit_metadata),
            max_body_bytes=settings.audit_max_body_bytes,
        )
        # The audit interceptor goes first: it must see the calls the others reject.
        self._server = grpc.server(self._executor, interceptors=[self.audit, *interceptors])
        self._health = health.HealthServicer(experimental_non_blocking=True)
        self.port = 0

    @property
    def service_names(self) -> list[str]:
        return [service.name for service in SERVICES]

    def start(self) -> int:
        """Register everything, bind, start serving; return the bound port."""
        for service in SERVICES:
            if service.servicer_factory is not None:
                service.add_to_server(service.servicer_factory(), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        enable_reflection([*self.service_names, health.SERVICE_NAME], self._server)

        if self.settings.tls:
            self.port = self._server.add_secure_port(
                self.settings.listen, _server_credentials(self.settings)
            )
        else:
            self.port = self._server.add_insecure_port(self.settings.listen)
        self._server.start()
        for name in ("", *self.service_names):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish within `grace`, then stop."""
        grace = self.settings.shutdown_grace if grace is None else grace
        self._health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.audit.close()
        self.audit_sink.close()
