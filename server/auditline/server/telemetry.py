"""OpenTelemetry for `auditline serve`, set up from the standard `OTEL_*` variables.

`OTEL_METRICS_EXPORTER` and `OTEL_TRACES_EXPORTER` name the exporters (`console`,
`otlp`, `none`; a comma-separated list). Unlike the specification's default (`otlp`),
nothing is exported while they are unset: a server must not send telemetry nobody
asked for. The exporters read their own variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_METRIC_EXPORT_INTERVAL`, …), the resource `OTEL_SERVICE_NAME` and
`OTEL_RESOURCE_ATTRIBUTES` (the service name is `auditline` unless given).

With traces on, the server's spans come from OpenTelemetry's gRPC server
interceptor placed before the audit interceptor, so each audit event carries the
trace and span ids of its call's span.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

__all__ = ["Telemetry", "telemetry_from_environment"]


def _otlp_metrics() -> MetricExporter:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter()


def _otlp_spans() -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


_METRIC_EXPORTERS: dict[str, Callable[[], MetricExporter]] = {
    "console": ConsoleMetricExporter,
    "otlp": _otlp_metrics,
}
_SPAN_EXPORTERS: dict[str, Callable[[], SpanExporter]] = {
    "console": ConsoleSpanExporter,
    "otlp": _otlp_spans,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Telemetry:
    """The SDK providers set up (None: that signal is off)."""

    meter_provider: MeterProvider | None = None
    tracer_provider: TracerProvider | None = None

    def shutdown(self) -> None:
        """Export what is pending (the last metrics, the last spans) and stop."""
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()


def _names(environ: Mapping[str, str], variable: str, known: Mapping[str, object]) -> list[str]:
    names = [n.strip() for n in environ.get(variable, "none").split(",") if n.strip()]
    unknown = [n for n in names if n != "none" and n not in known]
    if unknown:
        raise ValueError(
            f"{variable}: unknown exporter {unknown[0]!r} (one of {', '.join(known)}, none)"
        )
    return [n for n in names if n != "none"]


def telemetry_from_environment(environ: Mapping[str, str]) -> Telemetry:
    """Set up (and make global) the providers the variables ask for."""
    metric_names = _names(environ, "OTEL_METRICS_EXPORTER", _METRIC_EXPORTERS)
    span_names = _names(environ, "OTEL_TRACES_EXPORTER", _SPAN_EXPORTERS)
    if not metric_names and not span_names:
        return Telemetry()
    resource = Resource.create(
        {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": "auditline"}
    )
    meter_provider = tracer_provider = None
    if metric_names:
        readers = [PeriodicExportingMetricReader(_METRIC_EXPORTERS[n]()) for n in metric_names]
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        metrics.set_meter_provider(meter_provider)
    if span_names:
        tracer_provider = TracerProvider(resource=resource)
        for name in span_names:
            tracer_provider.add_span_processor(BatchSpanProcessor(_SPAN_EXPORTERS[name]()))
        trace.set_tracer_provider(tracer_provider)
    return Telemetry(meter_provider=meter_provider, tracer_provider=tracer_provider)
