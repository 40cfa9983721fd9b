"""OpenTelemetry metrics of the audit pipeline, read from its counters when collected.

Observable instruments cost nothing on the request path: the numbers are the
spool's and exporters' own counters, read when the SDK's reader asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from auditline.interceptor._export import Exporter
from auditline.interceptor._spool import Spool

__all__ = ["instrument"]


def instrument(
    spool: Spool,
    exporters: Callable[[], Sequence[Exporter]],
    meter_provider: MeterProvider | None = None,
) -> Meter:
    """Publish the pipeline's figures: events accepted, dropped, rejected, exported;
    spool bytes and backlog; export errors and latency."""
    meter = (meter_provider or metrics.get_meter_provider()).get_meter("auditline.interceptor")

    def spool_value(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        return lambda _options: [Observation(getattr(spool.stats, name))]

    def per_exporter(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        return lambda _options: [
            Observation(getattr(e.status, name), {"exporter": e.config.name}) for e in exporters()
        ]

    meter.create_observable_counter(
        "auditline.audit.events.accepted",
        [spool_value("accepted")],
        unit="{event}",
        description="events taken into the spool",
    )
    meter.create_observable_counter(
        "auditline.audit.events.dropped",
        [spool_value("dropped")],
        unit="{event}",
        description="events that could not be kept; each is counted in an "
        "AuditEventsDropped marker in the log",
    )
    meter.create_observable_counter(
        "auditline.audit.calls.rejected",
        [spool_value("rejected")],
        unit="{call}",
        description="calls refused before they ran because their events could not be kept",
    )
    meter.create_observable_gauge(
        "auditline.audit.spool.size",
        [spool_value("bytes")],
        unit="By",
        description="bytes of events in the spool that some exporter still needs",
    )
    meter.create_observable_gauge(
        "auditline.audit.spool.retained",
        [spool_value("retained_bytes")],
        unit="By",
        description="bytes of exported events kept in the spool for queries",
    )
    meter.create_observable_gauge(
        "auditline.audit.spool.buffered",
        [spool_value("buffered_bytes")],
        unit="By",
        description="bytes of events in memory, not yet written to the spool",
    )
    meter.create_observable_counter(
        "auditline.audit.spool.write_errors",
        [spool_value("write_errors")],
        unit="{error}",
        description="failed spool writes (a full disk, say); their events are retried",
    )
    meter.create_observable_gauge(
        "auditline.audit.degraded",
        [lambda _options: [Observation(int(spool.stats.degraded))]],
        unit="1",
        description="1 while the spool cannot promise to keep events (writes fail, or "
        "its disk reserve is spent); fail-closed servers refuse calls meanwhile",
    )
    meter.create_observable_counter(
        "auditline.audit.events.exported",
        [per_exporter("exported_events")],
        unit="{event}",
        description="events written to files, per exporter",
    )
    meter.create_observable_counter(
        "auditline.audit.export.errors",
        [per_exporter("errors")],
        unit="{error}",
        description="failed export attempts, per exporter",
    )
    meter.create_observable_gauge(
        "auditline.audit.export.backlog",
        [per_exporter("backlog")],
        unit="{event}",
        description="spooled events an exporter has not written",
    )
    latency = meter.create_histogram(
        "auditline.audit.export.duration", unit="s", description="time to store one exported file"
    )

    def recorder(name: str) -> Callable[[float], None]:
        return lambda seconds: latency.record(seconds, {"exporter": name})

    for exporter in exporters():
        exporter.on_upload = recorder(exporter.config.name)
    return meter
