"""`AuditHost`: the audit pipeline of `auditline serve`, on its own: the spool, the
default exporter and those defined through `ExporterService`, the audit settings it
follows, the detections and the exporters' status reports.

It runs in the serving process, or (`--audit-process worker`) in the audit worker that
`auditline serve` starts and supervises (`worker_host`): then the serving process only
captures calls, and follows the spool through a read-only `SpoolView`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from auditline.interceptor import (
    AuditInterceptor,
    AuditPolicy,
    AuditWorker,
    ExporterConfig,
    Pipeline,
    S3Writer,
    Spool,
    SummaryPolicy,
)
from auditline.interceptor.integrity import Notary
from auditline.server.audit_target import AuditTarget, BucketWriter, audit_settings
from auditline.server.config import Settings, configure_logging, split_list
from auditline.server.db import Database
from auditline.server.detection import Detector, rules_text
from auditline.server.detection_engine import DetectionEngine
from auditline.server.exporter_reports import report_statuses
from auditline.server.node import load_hmac_key, load_signing
from auditline.server.objectstore import ObjectStore, open_store
from auditline.server.periodic import Periodic
from auditline.server.saved_exporters import SavedExporters
from auditline.server.telemetry import telemetry_from_environment

__all__ = [
    "AuditHost",
    "audit_interceptor",
    "database_url",
    "default_exporter",
    "spool_path",
    "store_url",
    "worker_host",
]


def spool_path(settings: Settings) -> Path:
    return settings.data_dir / "audit" / "spool.db"


def database_url(settings: Settings) -> str:
    return settings.database_url or f"sqlite:///{settings.data_dir / 'auditline.db'}"


def store_url(settings: Settings) -> str:
    # Absolute: a relative data dir (the default `./data`) must not become a URL host.
    return settings.object_store or (settings.data_dir / "objects").resolve().as_uri()


def default_exporter(settings: Settings) -> ExporterConfig:
    return ExporterConfig(
        name="default",
        format=settings.export_format,
        compression=settings.export_compression,
        partitioning=settings.export_partitioning,
        ocsf_version=settings.export_ocsf_version,
        lake_region=settings.export_lake_region,
        lake_account_id=settings.export_lake_account_id,
        flush_interval=settings.export_interval,
        retention_mode=settings.export_retention_mode.upper()
        if settings.export_retention_days
        else None,
        retention_days=settings.export_retention_days,
    )


def audit_interceptor(
    settings: Settings, node_id: str, sink: Spool | AuditWorker
) -> AuditInterceptor:
    """The serving process's interceptor, as the settings say, handing events to the
    spool here or to the audit worker."""
    return AuditInterceptor(
        sink,
        fail_closed=settings.audit_durability == "sync",
        node_id=node_id,
        hmac_key=load_hmac_key(settings),
        trusted_proxies=split_list(settings.trusted_proxies),
        metadata_allowlist=split_list(settings.audit_metadata),
        max_body_bytes=settings.audit_max_body_bytes,
        unauthenticated_max_body_bytes=settings.audit_unauthenticated_body_bytes,
        max_message_bytes=settings.max_message_bytes,
        max_metadata_bytes=settings.max_metadata_bytes,
        policy=AuditPolicy.parse(split_list(settings.audit_policy)),
        summaries=SummaryPolicy(
            rate=settings.audit_unauthenticated_rate,
            burst=settings.audit_unauthenticated_burst,
            interval=settings.audit_summary_interval,
        ),
    )


class AuditHost:
    """The pipeline and what keeps it in step with the database. `start`, then `close`."""

    def __init__(
        self,
        settings: Settings,
        *,
        node_id: str,
        db: Database,
        store: ObjectStore,
        audit_bucket: str,
        notary: Notary,
        clock: Callable[[], float],
        closers: Sequence[Callable[[], object]] = (),
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        spool = Spool(
            spool_path(settings),
            node_id=node_id,
            durability=settings.audit_durability,
            backpressure=settings.backpressure,
            max_bytes=settings.spool_max_bytes,
            reserve_bytes=settings.spool_reserve_bytes or None,
            max_memory_bytes=settings.spool_memory_bytes,
            retain_seconds=settings.events_retention_days * 86400,
        )
        self.pipeline = Pipeline(spool, notary=notary)
        self.pipeline.add_exporter(
            default_exporter(settings),
            S3Writer.from_url(settings.export_target).check()
            if settings.export_target
            else BucketWriter(store, audit_bucket),
        )
        self.pipeline.instrument()
        # The settings followed, since when; the follower and a notice may both apply
        # them, and a notice's earlier moment wins. The first apply from when they
        # were changed: captures resent to a restarted worker are judged as when
        # their calls came. (From the start of time, the event of a call made just
        # before account audit logs were disabled, and resent, was dropped as if
        # they had been off: found by a review helper.)
        self._following = threading.Lock()
        self._target: AuditTarget | None = None
        self._since = 0
        first = audit_settings(db)
        self.follow_settings(first, since_ns=first.changed_ns)
        self.saved = SavedExporters(db, store, self.pipeline)
        self.saved.start_all()
        # What other replicas (or the serving process) change in the database, applied
        # here; and this node's exporters' status, reported there.
        self._follower = Periodic(
            name="follow",
            interval=settings.state_poll_interval,
            steps=[
                self.saved.reconcile,
                lambda: report_statuses(db, node_id, dict(self.pipeline.exporters), clock),
            ],
        )
        # The audit settings on a thread of their own: stopping an exporter that cannot
        # flush waits for it (5 s each), and the settings waited behind it, followed
        # 15 s late with three such exporters while calls went unrecorded (found by a
        # review helper).
        self._settings_follower = Periodic(
            name="follow-settings",
            interval=settings.state_poll_interval,
            steps=[self._read_settings],
        )
        # A rule that does not compile stops the start, with the reason.
        self._detection = (
            DetectionEngine(
                spool,
                Detector(rules_text(Path(d) for d in split_list(settings.detection_rules))),
                node_id=node_id,
                interval=settings.detection_interval,
                resume=spool_path(settings).with_name("detection.seq"),
            )
            if settings.detection_interval > 0
            else None
        )
        self._closers = closers  # what the host owns (in a worker), closed after it

    @property
    def spool(self) -> Spool:
        return self.pipeline.spool

    def _read_settings(self) -> None:
        """The follower's round: the settings as the database says."""
        read_at = time.time_ns()
        self.follow_settings(audit_settings(self.db), read_at=read_at)

    def follow_settings(
        self, target: AuditTarget, since_ns: int | None = None, *, read_at: int | None = None
    ) -> None:
        """Point the default exporter at the settings' target. While account audit logs
        are disabled only the settings log (changes of the settings) is kept: the
        other events are not spooled, from the change on (`since_ns`, or now).
        `read_at`: when `target` was read; older than what is followed, it is not
        applied (a notice of a later change came meanwhile)."""
        with self._following:
            if read_at is not None and read_at < self._since:
                return
            if target == self._target and (since_ns is None or since_ns >= self._since):
                return  # the follower asks every few seconds
            self._target = target
            self._since = time.time_ns() if since_ns is None else since_ns
            self._apply(target)

    def _apply(self, target: AuditTarget) -> None:
        if target.bucket and not self.settings.export_target:
            self.pipeline.exporters["default"].retarget(BucketWriter(self.store, target.bucket))
        # Disabled: the settings log is still kept, and what the detections find (the
        # audit logs turned off is exactly when a finding matters).
        kept = None if target.enabled else frozenset({"LOG_TYPE_SETTINGS", "LOG_TYPE_FINDINGS"})
        self.pipeline.spool.keep_logs(kept, self._since)

    def notice(self, what: str, value: Any, at_ns: int) -> None:
        """The serving process changed the state this host follows at `at_ns` and says
        so through its `AuditWorker`, ahead of the captures of the calls after the
        change. The audit settings ("settings", with what they became: the database
        may already say more) are followed before those are spooled, and from that
        moment, as in the serving process; the exporters ("state") soon after."""
        if what == "settings":
            enabled, bucket = value
            self.follow_settings(AuditTarget(enabled=enabled, bucket=bucket), since_ns=at_ns)
        self._settings_follower.run_soon()
        self._follower.run_soon()

    def start(self) -> AuditHost:
        self._follower.start()
        self._settings_follower.start()
        if self._detection is not None:
            self._detection.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Stop following, then close the pipeline (after the interceptor): the last
        events into the spool, then every exporter's last file."""
        self._follower.stop()
        self._settings_follower.stop()
        if self._detection is not None:
            self._detection.stop()
        self.pipeline.close(timeout=timeout)
        for close in self._closers:
            close()


def worker_host(settings: Settings, node_id: str, audit_bucket: str) -> AuditHost:
    """The host an `AuditWorker` of `auditline serve` runs: its own connections to the
    database and the object store, the node's signing key, started; logging, metrics
    and traces as the serving process has them (the spool's and exporters' metrics
    come from here)."""
    configure_logging(settings)
    telemetry = telemetry_from_environment(os.environ)
    db = Database(database_url(settings))
    return AuditHost(
        settings,
        node_id=node_id,
        db=db,
        store=open_store(store_url(settings)),
        audit_bucket=audit_bucket,
        notary=load_signing(settings, node_id).notary,
        clock=time.time,
        closers=(db.close, telemetry.shutdown),
    ).start()
