"""AuditSettingsService: where account audit logs go, and which buckets are audited.

Only immutable (object-locked) buckets may be the target. Disabling the account
audit logs stops writing them to the target (the target stays in the settings);
changes of the settings are themselves written, to the settings log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from auditline.audit.v1 import event_pb2, settings_pb2_grpc
from auditline.audit.v1 import settings_pb2 as pb
from auditline.errors import FailedPreconditionError, InvalidArgumentError
from auditline.interceptor import set_log_type
from auditline.server.audit_target import AuditTarget
from auditline.server.db import Database, tables
from auditline.server.guard import current_caller
from auditline.server.services._common import (
    AUDIT_TARGET_LOCK,
    EXPORTERS_LOCK,
    bucket_id,
    timestamp,
)
from auditline.server.services.buckets import require_bucket

# The methods whose events are filed in the settings log (the changes of the audit
# settings; the catalog reads this, and a test checks each lands there).
SETTINGS_LOG_METHODS = frozenset(
    {
        "EnableAccountAuditLogs",
        "DisableAccountAuditLogs",
        "SetAuditTargetBucket",
        "EnableBucketAuditLogging",
        "DisableBucketAuditLogging",
    }
)
# The settings-log event of each start: the audit policy it applies.
POLICY_EVENT = "AuditPolicyApplied"

# Called after every change, so the exporter follows.
SettingsListener = Callable[[AuditTarget], None]


class AuditSettingsServicer(settings_pb2_grpc.AuditSettingsServiceServicer):
    def __init__(
        self,
        db: Database,
        clock: Callable[[], float],
        on_change: SettingsListener = lambda target: None,
        policy: Sequence[str] = (),
        check_target: Callable[[str, Connection], None] = lambda bucket, connection: None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.on_change = on_change
        self.policy = list(policy)  # this node's audit policy rules, as given
        # Refuses a target where another exporter writes already (the default
        # exporter's bucket moved onto it: their files and manifests would collide).
        self.check_target = check_target

    def _settings(self, connection: Connection) -> pb.AuditSettings:
        row = connection.execute(sa.select(tables.audit_settings)).mappings().first()
        audited = connection.execute(
            sa.select(tables.buckets.c.name)
            .where(tables.buckets.c.audit_logging.is_(True))
            .order_by(tables.buckets.c.name)
        ).scalars()
        settings = pb.AuditSettings(audited_buckets=list(audited), audit_policy=self.policy)
        if row is not None:
            settings.account_audit_logs_enabled = row["account_logs_enabled"]
            settings.target_bucket = row["target_bucket"]
            settings.updated_by = row["updated_by"]
            settings.update_time.CopyFrom(timestamp(row["updated_at"]))
        return settings

    def _immutable_bucket(self, connection: Connection, value: str, field: str) -> str:
        """The bucket's name, when it exists and is immutable."""
        name = bucket_id(value, field)
        bucket = require_bucket(connection, name)
        if not bucket["immutable"]:
            raise FailedPreconditionError(
                f"buckets/{name} is not immutable: only immutable (object-locked) buckets may "
                "be the audit log target; turn object lock on with SetObjectImmutability"
            )
        return name

    def _change(self, **values: Any) -> pb.AuditSettings:
        """Apply a change, tell the pipeline, file the call under the settings log."""
        set_log_type(event_pb2.LOG_TYPE_SETTINGS)
        caller = current_caller()
        with self.db.begin() as connection:
            if "target_bucket" in values:
                # Checked again where it is set, one change at a time with DeleteBucket:
                # a bucket deleted at once on another replica became the target (found
                # by a review helper), and nothing left the node's spools.
                self.db.serialize(connection, AUDIT_TARGET_LOCK)
                self._immutable_bucket(connection, values["target_bucket"], "target_bucket")
                # And with exporters made or moved: one made on another replica as
                # the target moved onto its destination passed both checks.
                self.db.serialize(connection, EXPORTERS_LOCK)
                self.check_target(values["target_bucket"], connection)
            if connection.execute(sa.select(tables.audit_settings.c.id)).first() is None:
                connection.execute(
                    tables.audit_settings.insert().values(
                        id=1,
                        account_logs_enabled=False,
                        target_bucket="",
                        updated_at=0.0,
                        updated_by="",
                    )
                )
            connection.execute(
                tables.audit_settings.update().values(
                    **values, updated_at=self.clock(), updated_by=caller.display_name
                )
            )
            settings = self._settings(connection)
        self.on_change(
            AuditTarget(enabled=settings.account_audit_logs_enabled, bucket=settings.target_bucket)
        )
        return settings

    def GetAuditSettings(
        self, request: pb.GetAuditSettingsRequest, context: grpc.ServicerContext
    ) -> pb.GetAuditSettingsResponse:
        with self.db.begin() as connection:
            return pb.GetAuditSettingsResponse(settings=self._settings(connection))

    def EnableAccountAuditLogs(
        self, request: pb.EnableAccountAuditLogsRequest, context: grpc.ServicerContext
    ) -> pb.EnableAccountAuditLogsResponse:
        target = request.target_bucket
        with self.db.begin() as connection:
            if not target:
                target = self._settings(connection).target_bucket
                if not target:
                    raise InvalidArgumentError.field(
                        "target_bucket", "is required: no target bucket is set yet"
                    )
            target = self._immutable_bucket(connection, target, "target_bucket")
        return pb.EnableAccountAuditLogsResponse(
            settings=self._change(account_logs_enabled=True, target_bucket=target)
        )

    def DisableAccountAuditLogs(
        self, request: pb.DisableAccountAuditLogsRequest, context: grpc.ServicerContext
    ) -> pb.DisableAccountAuditLogsResponse:
        return pb.DisableAccountAuditLogsResponse(settings=self._change(account_logs_enabled=False))

    def SetAuditTargetBucket(
        self, request: pb.SetAuditTargetBucketRequest, context: grpc.ServicerContext
    ) -> pb.SetAuditTargetBucketResponse:
        if not request.target_bucket:
            raise InvalidArgumentError.field("target_bucket", "is required")
        with self.db.begin() as connection:
            target = self._immutable_bucket(connection, request.target_bucket, "target_bucket")
        return pb.SetAuditTargetBucketResponse(settings=self._change(target_bucket=target))

    def _bucket_logging(self, value: str, enabled: bool) -> pb.AuditSettings:
        bucket = bucket_id(value, "bucket")
        set_log_type(event_pb2.LOG_TYPE_SETTINGS)
        with self.db.begin() as connection:
            require_bucket(connection, bucket)
            connection.execute(
                tables.buckets.update()
                .where(tables.buckets.c.name == bucket)
                .values(audit_logging=enabled)
            )
        return self._change()

    def EnableBucketAuditLogging(
        self, request: pb.EnableBucketAuditLoggingRequest, context: grpc.ServicerContext
    ) -> pb.EnableBucketAuditLoggingResponse:
        return pb.EnableBucketAuditLoggingResponse(
            settings=self._bucket_logging(request.bucket, True)
        )

    def DisableBucketAuditLogging(
        self, request: pb.DisableBucketAuditLoggingRequest, context: grpc.ServicerContext
    ) -> pb.DisableBucketAuditLoggingResponse:
        return pb.DisableBucketAuditLoggingResponse(
            settings=self._bucket_logging(request.bucket, False)
        )
