"""Assembles the gRPC server: account and audit services, health, reflection."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider

from auditline.audit.v1 import event_pb2, options_pb2
from auditline.interceptor import (
    AuditWorker,
    Spool,
    SpoolView,
    TrustedProxies,
    event_document,
    record_event,
)
from auditline.interceptor.integrity import Notary
from auditline.server.accounts import Accounts
from auditline.server.audit_host import (
    AuditHost,
    audit_interceptor,
    database_url,
    default_exporter,
    spool_path,
    store_url,
    worker_host,
)
from auditline.server.audit_target import AuditTarget, audit_settings, ensure_audit_target
from auditline.server.bucket_reconciliation import (
    BUCKETS_RECONCILED_EVENT,
    Reconciliation,
    reconcile_buckets,
)
from auditline.server.config import Settings, split_list
from auditline.server.db import Database
from auditline.server.guard import CallGuard
from auditline.server.iam import IamEvent, iam_api_event
from auditline.server.log_queries import ExportedLogQueries, QueryLimits, exporter_location
from auditline.server.node import (
    load_hmac_key,
    load_signing,
    prepare_data_dir,
    server_credentials,
)
from auditline.server.objectstore import ObjectStore, open_store
from auditline.server.periodic import Periodic
from auditline.server.product_events import product_event
from auditline.server.reflection import enable_reflection
from auditline.server.registry import SERVICES, ServiceRegistration
from auditline.server.saved_exporters import SavedExporters
from auditline.server.services.audit_settings import POLICY_EVENT
from auditline.server.services.exporters import ExporterServicer
from auditline.server.services.usage import UsageServicer
from auditline.server.sessions import LoginPolicy

__all__ = ["AUDIT_HEALTH", "SERVICES", "AuditlineServer", "ServiceRegistration"]

log = logging.getLogger("auditline.server")

# The health service name that says whether the audit path can keep events.
AUDIT_HEALTH = "auditline.audit.pipeline"


def _tracing(tracer_provider: TracerProvider) -> grpc.ServerInterceptor:
    from opentelemetry.instrumentation.grpc import server_interceptor

    interceptor: grpc.ServerInterceptor = server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=tracer_provider
    )
    return interceptor


def _server_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC's own limits sit above the interceptor's, so that an oversized request is
    answered and audited by the interceptor rather than dropped unseen by gRPC."""
    return [
        # A second server on the same port must fail, not share it (SO_REUSEPORT).
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", 2 * settings.max_message_bytes),
        ("grpc.max_metadata_size", 8 * settings.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", 8 * settings.max_metadata_bytes),
    ]


class AuditlineServer:
    """The service on one listening address. `start`, then `stop` once."""

    db: Database
    store: ObjectStore
    settings: Settings
    trusted_proxies: TrustedProxies
    exporters: ExporterServicer
    accounts: Accounts
    usage: UsageServicer
    notary: Notary
    verifier_keys: list[str]
    log_queries: ExportedLogQueries
    spool_view: SpoolView

    def __init__(
        self,
        settings: Settings,
        *,
        interceptors: Sequence[grpc.ServerInterceptor] = (),
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.node_id = prepare_data_dir(settings.data_dir)
        # First, before anything starts: a wrong file is told as such, not later as
        # a port that cannot be bound.
        self._credentials = server_credentials(settings) if settings.tls else None
        self.clock: Callable[[], float] = time.time
        self.db = Database(database_url(settings))
        self.store = open_store(store_url(settings))
        self._executor = futures.ThreadPoolExecutor(
            max_workers=settings.max_workers, thread_name_prefix="auditline-rpc"
        )
        self.trusted_proxies = TrustedProxies(split_list(settings.trusted_proxies))
        self.accounts = Accounts(
            self.db,
            token_ttl=settings.token_ttl,
            policy=LoginPolicy(block_seconds=settings.login_block_seconds),
            iam=self._record_iam,
            clock=self.clock,
            hmac_key=load_hmac_key(settings),
        )
        self.admin_credentials = self.accounts.bootstrap_admin(settings.data_dir, os.environ)
        signing = load_signing(settings, self.node_id)
        self.notary, self.verifier_keys = signing.notary, list(signing.verifier_keys)
        self.audit_target = ensure_audit_target(
            self.db,
            self.store,
            settings.audit_bucket,
            settings.export_retention_days,
            self.clock,
            settings.export_retention_mode.upper(),
        )
        reconciliation = reconcile_buckets(
            self.db,
            self.store,
            policy=settings.bucket_mismatch,
            audit_bucket=self.audit_target,
            clock=self.clock,
        )
        # Before the audit side, whose state it follows from the start (`_audit_health`).
        self._health = health.HealthServicer(experimental_non_blocking=True)
        # Where events are built, spooled and exported: here (`host`), or in a worker
        # process running the same host (`worker`); the audit sink is one or the other.
        self.host: AuditHost | None = None
        self.worker: AuditWorker | None = None
        if settings.audit_process == "worker":
            self.worker = AuditWorker(
                functools.partial(worker_host, settings, self.node_id, self.audit_target)
            )
            self.worker.on_degraded = self._audit_health
            self.audit = audit_interceptor(settings, self.node_id, self.worker)
        else:
            self.host = AuditHost(
                settings,
                node_id=self.node_id,
                db=self.db,
                store=self.store,
                audit_bucket=self.audit_target,
                notary=self.notary,
                clock=self.clock,
            )
            self.audit = audit_interceptor(settings, self.node_id, self.host.spool)
            self.host.spool.on_degraded = self._audit_health
        self.spool_view = SpoolView(spool_path(settings))
        saved = self.host.saved if self.host is not None else self._remote_exporters()
        self.exporters = ExporterServicer(
            self.db,
            self.store,
            saved,
            self.clock,
            lambda connection: audit_settings(self.db, connection).bucket,
            default_exporter(settings),
            self.node_id,
            export_target=settings.export_target,
        )
        self.log_queries = ExportedLogQueries(
            locate=lambda name: exporter_location(
                self.exporters.row(name), self.store, settings.export_target
            ),
            limits=QueryLimits(
                timeout=settings.query_timeout,
                max_bytes=settings.query_max_bytes,
                memory_bytes=settings.query_memory_bytes,
            ),
        )
        self.usage = UsageServicer(self.db, self.store, self.clock)
        self._snapshots = Periodic(
            name="usage",
            interval=settings.usage_snapshot_interval,
            steps=[lambda: self.usage.scheduled_snapshot(settings.usage_snapshot_interval)],
        )
        # The audit interceptor goes first: it must see the calls the others reject.
        # Only the tracing one comes before it, so that each event carries the ids of
        # its call's span.
        tracing = [] if tracer_provider is None else [_tracing(tracer_provider)]
        self._server = grpc.server(
            self._executor,
            interceptors=[*tracing, self.audit, CallGuard(self.accounts), *interceptors],
            options=_server_options(settings),
        )
        self._record_policy()
        self._record_reconciliation(reconciliation)
        self.port = 0

    def _emit(self, event: event_pb2.ApiEvent) -> None:
        """An event of the server's own, outside any call, to the audit log."""
        sink = self.worker if self.worker is not None else self._spool
        sink.emit_documents([event_document(event)], wait=False)

    @property
    def _spool(self) -> Spool:
        assert self.host is not None
        return self.host.spool

    def _record_iam(self, event: IamEvent) -> None:
        """An IAM event goes with the call that caused it (in fail-closed mode, the call
        completes only once both are durable); outside a call, on its own."""
        api_event = iam_api_event(event, self.node_id)
        if not record_event(api_event, summarize=event.summarize):
            self._emit(api_event)

    def _record_start_event(
        self, name: str, *, service: str, log_type: int, params: dict[str, Any]
    ) -> None:
        """A change this start made (no call did), as an UPDATE by `auditline serve`."""
        event = product_event(
            name,
            service=service,
            activity=options_pb2.ACTIVITY_UPDATE,
            log_type=event_pb2.LogType.ValueType(log_type),
            node_id=self.node_id,
            account_name="auditline serve",
            params=params,
        )
        self._emit(event)

    def _record_policy(self) -> None:
        """Say in the settings log which audit policy this start applies: a change of
        it (a flag, between starts) is recorded like every other settings change."""
        self._record_start_event(
            POLICY_EVENT,
            service="auditline.audit.v1.AuditSettingsService",
            log_type=event_pb2.LOG_TYPE_SETTINGS,
            params={"rules": split_list(self.settings.audit_policy)},
        )

    def _record_reconciliation(self, reconciliation: Reconciliation) -> None:
        """Buckets a start adopted into the catalogue or forgot: changes of the account's
        resources no call made, so said in the account log."""
        if reconciliation.changed:
            self._record_start_event(
                BUCKETS_RECONCILED_EVENT,
                service="auditline.account.v1.BucketService",
                log_type=event_pb2.LOG_TYPE_ACCOUNT_API,
                params={
                    "adopted": list(reconciliation.adopted),
                    "forgotten": list(reconciliation.forgotten),
                },
            )

    def _audit_health(self, reason: str) -> None:
        """Health follows the audit path: NOT_SERVING while it cannot keep events (and,
        fail-closed, for the whole server, which refuses every call meanwhile)."""
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if reason
            else health_pb2.HealthCheckResponse.SERVING
        )
        self._health.set(AUDIT_HEALTH, status)
        if self.settings.audit_durability == "sync":
            for name in ("", *self.service_names):
                self._health.set(name, status)

    def follow_settings(self, target: AuditTarget) -> None:
        """After a change of the audit settings: the pipeline follows it at once (an
        audit worker's is told what they became, ahead of the calls after the change)."""
        if self.host is not None:
            self.host.follow_settings(target)
        elif self.worker is not None:
            self.worker.notify("settings", (target.enabled, target.bucket))

    def _remote_exporters(self) -> SavedExporters:
        """The saved exporters of an audit worker's pipeline: changes are told to it."""
        worker = self.worker
        assert worker is not None
        return SavedExporters(self.db, self.store, changed=lambda: worker.notify("state"))

    @property
    def service_names(self) -> list[str]:
        return [service.name for service in SERVICES]

    def start(self) -> int:
        """Register everything, bind, start serving; return the bound port."""
        for service in SERVICES:
            service.add_to_server(service.servicer_factory(self), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        enable_reflection(
            [*self.service_names, health.SERVICE_NAME],
            self._server,
            max_streams=self.settings.long_call_slots,
        )

        try:
            if self._credentials is not None:
                self.port = self._server.add_secure_port(self.settings.listen, self._credentials)
            else:
                self.port = self._server.add_insecure_port(self.settings.listen)
        except RuntimeError:
            raise RuntimeError(
                f"cannot listen on {self.settings.listen}: another process has the port, "
                "or the address is not this machine's"
            ) from None
        self._server.start()
        self._snapshots.start()
        if self.host is not None:
            self.host.start()
        for name in ("", *self.service_names):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._audit_health(self.worker.degraded if self.worker else self._spool.degraded)
        return self.port

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish within `grace`, then stop."""
        grace = self.settings.shutdown_grace if grace is None else grace
        self._health.enter_graceful_shutdown()
        self.audit.stopping(grace)
        self._server.stop(grace).wait()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._snapshots.stop()
        # The interceptor's last events into the spool, then every exporter's last file.
        timeout = max(grace, 30.0)
        self.audit.close(timeout)
        if self.host is not None:
            self.host.close(timeout)
        if self.worker is not None:
            self.worker.close(timeout)
        self.spool_view.close()
        self.db.close()
