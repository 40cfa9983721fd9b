"""auditline's audit interceptor: every gRPC call becomes a redacted `ApiEvent`.

Embed it in any Python gRPC server::

    from auditline.interceptor import AuditInterceptor, MemorySink

    sink = MemorySink()
    server = grpc.server(executor, interceptors=[AuditInterceptor(sink)])

`AsyncAuditInterceptor` takes the same arguments for `grpc.aio` servers. For
durable delivery, give it a `Spool` as the sink and start `Exporter`s that write
the spooled events as files through an `ObjectWriter`. This package never imports
the auditline account service.
"""

from auditline.interceptor._aio import AsyncAuditInterceptor
from auditline.interceptor._export import Exporter
from auditline.interceptor._export_config import (
    ExporterConfig,
    ExporterState,
    ExporterStatus,
    ObjectWriter,
)
from auditline.interceptor._methods import activity_from_verb
from auditline.interceptor._metrics import instrument
from auditline.interceptor._redact import MASK, hmac_value
from auditline.interceptor._scope import record_event, set_log_type, set_principal
from auditline.interceptor._sinks import MemorySink
from auditline.interceptor._spool import Spool, SpoolStats
from auditline.interceptor._summaries import SummaryPolicy
from auditline.interceptor._sync import AuditInterceptor
from auditline.interceptor._types import (
    AuditUnavailableError,
    EventDocument,
    Principal,
    PrincipalInput,
    PrincipalResolver,
    Sink,
)

__all__ = [
    "MASK",
    "AsyncAuditInterceptor",
    "AuditInterceptor",
    "AuditUnavailableError",
    "EventDocument",
    "Exporter",
    "ExporterConfig",
    "ExporterState",
    "ExporterStatus",
    "MemorySink",
    "ObjectWriter",
    "Principal",
    "PrincipalInput",
    "PrincipalResolver",
    "Sink",
    "Spool",
    "SpoolStats",
    "SummaryPolicy",
    "activity_from_verb",
    "hmac_value",
    "instrument",
    "record_event",
    "set_log_type",
    "set_principal",
]
