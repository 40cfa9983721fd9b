"""auditline's audit interceptor: every gRPC call becomes a redacted `ApiEvent`.

Embed it in any Python gRPC server::

    from auditline.interceptor import AuditInterceptor, MemorySink

    sink = MemorySink()
    server = grpc.server(executor, interceptors=[AuditInterceptor(sink)])

`AsyncAuditInterceptor` takes the same arguments for `grpc.aio` servers. For
durable delivery, give it a `Spool` as the sink, and a `Pipeline` runs `Exporter`s
that write the spooled events as files through an `ObjectWriter` (`open_writer`: a
directory, or an object-locked S3 bucket with the `[s3]` extra) and shuts it all
down in order. This package never imports the auditline account service.
"""

from auditline.interceptor._aio import AsyncAuditInterceptor
from auditline.interceptor._export import Exporter
from auditline.interceptor._export_config import (
    LAKE_PARTITION,
    PARTITIONINGS,
    ExporterConfig,
    ExporterState,
    ExporterStatus,
    ObjectWriter,
)
from auditline.interceptor._formats import event_document
from auditline.interceptor._locations import LocalDirectory, Location, S3Location
from auditline.interceptor._losses import MARKER_NAME as DROP_EVENT
from auditline.interceptor._methods import MethodInfo, activity_from_verb, method_info
from auditline.interceptor._metrics import instrument
from auditline.interceptor._ocsf import OCSF_VERSIONS
from auditline.interceptor._otel_logs import OtelLogSink
from auditline.interceptor._peer import TrustedProxies
from auditline.interceptor._pipeline import Pipeline
from auditline.interceptor._policy import AuditPolicy, AuditRule
from auditline.interceptor._query import QueryError, QueryLimitError, QueryResult, query_exported
from auditline.interceptor._reading import ExportedEvent, ocsf_record, read_exported
from auditline.interceptor._redact import MASK, hmac_value
from auditline.interceptor._scope import record_event, set_log_type, set_principal
from auditline.interceptor._sinks import MemorySink
from auditline.interceptor._spool import Spool
from auditline.interceptor._spool_records import SpoolStats
from auditline.interceptor._spool_view import SpoolView
from auditline.interceptor._summaries import SUMMARY_NAME as SUMMARY_EVENT
from auditline.interceptor._summaries import SummaryPolicy, source_of
from auditline.interceptor._sync import AuditInterceptor
from auditline.interceptor._types import (
    AuditUnavailableError,
    EventDocument,
    Principal,
    PrincipalInput,
    PrincipalResolver,
    Sink,
)
from auditline.interceptor._worker import AuditWorker
from auditline.interceptor._writers import DirectoryWriter, S3Writer, open_writer

__all__ = [
    "DROP_EVENT",
    "LAKE_PARTITION",
    "MASK",
    "OCSF_VERSIONS",
    "PARTITIONINGS",
    "SUMMARY_EVENT",
    "AsyncAuditInterceptor",
    "AuditInterceptor",
    "AuditPolicy",
    "AuditRule",
    "AuditUnavailableError",
    "AuditWorker",
    "DirectoryWriter",
    "EventDocument",
    "ExportedEvent",
    "Exporter",
    "ExporterConfig",
    "ExporterState",
    "ExporterStatus",
    "LocalDirectory",
    "Location",
    "MemorySink",
    "MethodInfo",
    "ObjectWriter",
    "OtelLogSink",
    "Pipeline",
    "Principal",
    "PrincipalInput",
    "PrincipalResolver",
    "QueryError",
    "QueryLimitError",
    "QueryResult",
    "S3Location",
    "S3Writer",
    "Sink",
    "Spool",
    "SpoolStats",
    "SpoolView",
    "SummaryPolicy",
    "TrustedProxies",
    "activity_from_verb",
    "event_document",
    "hmac_value",
    "instrument",
    "method_info",
    "ocsf_record",
    "open_writer",
    "query_exported",
    "read_exported",
    "record_event",
    "set_log_type",
    "set_principal",
    "source_of",
]
