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
from auditline.interceptor._core import (
    AuditUnavailableError,
    Principal,
    PrincipalInput,
    PrincipalResolver,
    Sink,
    set_log_type,
    set_principal,
)
from auditline.interceptor._export import (
    Exporter,
    ExporterConfig,
    ExporterState,
    ExporterStatus,
    ObjectWriter,
)
from auditline.interceptor._methods import activity_from_verb
from auditline.interceptor._metrics import instrument
from auditline.interceptor._redact import MASK, hmac_value
from auditline.interceptor._sinks import MemorySink
from auditline.interceptor._spool import Spool
from auditline.interceptor._sync import AuditInterceptor

__all__ = [
    "MASK",
    "AsyncAuditInterceptor",
    "AuditInterceptor",
    "AuditUnavailableError",
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
    "activity_from_verb",
    "hmac_value",
    "instrument",
    "set_log_type",
    "set_principal",
]
