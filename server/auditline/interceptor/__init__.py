"""auditline's audit interceptor: every gRPC call becomes a redacted `ApiEvent`.

Embed it in any Python gRPC server::

    from auditline.interceptor import AuditInterceptor, MemorySink

    sink = MemorySink()
    server = grpc.server(executor, interceptors=[AuditInterceptor(sink)])

`AsyncAuditInterceptor` takes the same arguments for `grpc.aio` servers. This
package never imports the auditline account service.
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
from auditline.interceptor._methods import activity_from_verb
from auditline.interceptor._redact import MASK, hmac_value
from auditline.interceptor._sinks import JsonLinesSink, MemorySink
from auditline.interceptor._sync import AuditInterceptor

__all__ = [
    "MASK",
    "AsyncAuditInterceptor",
    "AuditInterceptor",
    "AuditUnavailableError",
    "JsonLinesSink",
    "MemorySink",
    "Principal",
    "PrincipalInput",
    "PrincipalResolver",
    "Sink",
    "activity_from_verb",
    "hmac_value",
    "set_log_type",
    "set_principal",
]
