"""The product's services, in one list: each one's full name, how to add it to a
server, and how its servicer is made from the running `AuditlineServer`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

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
from auditline.server.config import split_list
from auditline.server.services.audit_log import AuditLogServicer
from auditline.server.services.audit_settings import AuditSettingsServicer
from auditline.server.services.auth import AuthServicer
from auditline.server.services.buckets import BucketServicer
from auditline.server.services.permissions import PermissionServicer
from auditline.server.services.service_accounts import ServiceAccountServicer

if TYPE_CHECKING:
    from auditline.server.app import AuditlineServer

__all__ = ["SERVICES", "ServiceRegistration"]


@dataclasses.dataclass(frozen=True)
class ServiceRegistration:
    """One service of the product: its full name and how to add it to a server."""

    name: str
    add_to_server: Callable[[Any, grpc.Server], None]
    servicer_factory: Callable[[AuditlineServer], object]


def _registration(
    descriptor: Any,
    add: Callable[[Any, grpc.Server], None],
    factory: Callable[[AuditlineServer], object],
) -> ServiceRegistration:
    return ServiceRegistration(descriptor.full_name, add, factory)


SERVICES: tuple[ServiceRegistration, ...] = (
    _registration(
        auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        lambda server: AuthServicer(server.accounts, server.trusted_proxies),
    ),
    _registration(
        usage_pb2.DESCRIPTOR.services_by_name["UsageService"],
        usage_pb2_grpc.add_UsageServiceServicer_to_server,
        lambda server: server.usage,
    ),
    _registration(
        permission_pb2.DESCRIPTOR.services_by_name["PermissionService"],
        permission_pb2_grpc.add_PermissionServiceServicer_to_server,
        lambda server: PermissionServicer(server.db, server.clock),
    ),
    _registration(
        service_account_pb2.DESCRIPTOR.services_by_name["ServiceAccountService"],
        service_account_pb2_grpc.add_ServiceAccountServiceServicer_to_server,
        lambda server: ServiceAccountServicer(server.accounts),
    ),
    _registration(
        bucket_pb2.DESCRIPTOR.services_by_name["BucketService"],
        bucket_pb2_grpc.add_BucketServiceServicer_to_server,
        lambda server: BucketServicer(server.db, server.store, server.clock),
    ),
    _registration(
        settings_pb2.DESCRIPTOR.services_by_name["AuditSettingsService"],
        settings_pb2_grpc.add_AuditSettingsServiceServicer_to_server,
        lambda server: AuditSettingsServicer(
            server.db,
            server.clock,
            server.follow_settings,
            policy=split_list(server.settings.audit_policy),
            # With --export-target the default exporter does not follow the target.
            check_target=(
                server.exporters.check_default_target
                if not server.settings.export_target
                else lambda bucket, connection: None
            ),
        ),
    ),
    _registration(
        exporter_pb2.DESCRIPTOR.services_by_name["ExporterService"],
        exporter_pb2_grpc.add_ExporterServiceServicer_to_server,
        lambda server: server.exporters,
    ),
    _registration(
        audit_log_pb2.DESCRIPTOR.services_by_name["AuditLogService"],
        audit_log_pb2_grpc.add_AuditLogServiceServicer_to_server,
        lambda server: AuditLogServicer(
            server.spool_view,
            server.notary.origin,
            server.verifier_keys,
            server.log_queries,
            max_tails=server.settings.long_call_slots,
        ),
    ),
)
