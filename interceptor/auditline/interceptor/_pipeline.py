"""The audit path of one server, wired once and shut down in the one safe order.

    spool = Spool(path, node_id="greeter-1", durability="sync")
    audit = AuditInterceptor(spool, fail_closed=True)
    pipeline = Pipeline(spool, interceptors=[audit], notary=notary)
    pipeline.add_exporter(ExporterConfig(name="files"), open_writer("s3://audit?..."))
    ...  # serve; then, once the gRPC server has stopped:
    pipeline.close()

Closing in any other order loses events: an exporter stopped before the spool has
taken the last calls' events never writes them, and a spool closed before the
interceptors' workers have drained refuses them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType, TracebackType

from opentelemetry.metrics import Meter, MeterProvider

from auditline.interceptor._base import AuditInterceptorBase
from auditline.interceptor._export import Exporter
from auditline.interceptor._export_config import ExporterConfig, ObjectWriter
from auditline.interceptor._integrity import Notary
from auditline.interceptor._metrics import instrument
from auditline.interceptor._spool import Spool

__all__ = ["Pipeline"]


class Pipeline:
    """Interceptors feeding one spool, and the exporters that write it out."""

    def __init__(
        self,
        spool: Spool,
        *,
        interceptors: Iterable[AuditInterceptorBase] = (),
        notary: Notary | None = None,
    ) -> None:
        self.spool = spool
        # Signs every exporter's checkpoints; None: no integrity objects are written.
        self.notary = notary
        self._interceptors = list(interceptors)
        self._exporters: dict[str, Exporter] = {}
        self._stopping: dict[str, Exporter] = {}  # stopped, but not yet ended
        self._waits_for: dict[str, Exporter] = {}  # the one each running one replaced
        self._closed = False

    @property
    def exporters(self) -> Mapping[str, Exporter]:
        """The running exporters by name (read-only: add and remove through the pipeline)."""
        return MappingProxyType(self._exporters)

    def add_exporter(self, config: ExporterConfig, writer: ObjectWriter) -> Exporter:
        """Start an exporter; one already running under the same name is stopped first
        (it resumes from the same watermark, so nothing is written twice or skipped)."""
        if self._closed:
            raise RuntimeError("the pipeline is closed")
        self.remove_exporter(config.name)
        exporter = Exporter(
            config, self.spool, writer, node_id=self.spool.node_id, notary=self.notary
        )
        # One it replaces that is still inside a batch (a slow store) finishes it first.
        after = self._stopping.pop(config.name, None)
        if after is not None:
            self._waits_for[config.name] = after
        else:
            self._waits_for.pop(config.name, None)
        self._exporters[config.name] = exporter.start(after=after)
        return exporter

    def remove_exporter(self, name: str, timeout: float = 5.0, *, forget: bool = False) -> None:
        """Stop an exporter (its pending events stay in the spool for the next one).
        `forget`: it is gone for good, and so is its watermark (once its thread has
        ended; an exporter added later under the name starts afresh)."""
        exporter = self._exporters.pop(name, None)
        if exporter is not None:
            exporter.stop(timeout, forget=forget)
            before = self._waits_for.pop(name, None)
            if exporter.running:  # still inside a batch: the next of its name waits
                self._stopping[name] = exporter
            elif before is not None and before.running:
                # Stopped while it still waited for the one it replaced, which is
                # still inside its batch: the next of the name waits for that one (it
                # began with none to wait for, and the one before, told to forget,
                # deleted the next one's watermark as it ended).
                self._stopping[name] = before
                if forget:
                    before.forget()
        elif name in self._stopping:  # stopped already, still inside its batch
            if forget:
                self._stopping[name].forget()
        elif forget:
            self.spool.store.unregister(name)

    def instrument(self, meter_provider: MeterProvider | None = None) -> Meter:
        """Publish the pipeline's OpenTelemetry metrics (a no-op without an SDK set up)."""
        return instrument(self.spool, lambda: list(self._exporters.values()), meter_provider)

    def close(self, timeout: float = 30.0) -> None:
        """Call once the gRPC server has stopped: the interceptors deliver their last
        events, the spool commits them (and a count of any it had to drop), every
        exporter writes what is left, and the spool closes. Each step is bounded by
        `timeout`; what an exporter could not write stays in the spool for next time."""
        if self._closed:
            return
        self._closed = True
        for interceptor in self._interceptors:
            interceptor.close(timeout)
        self.spool.flush(timeout, with_drop_marker=True)
        # Replaced ones still inside a batch first: their successors wait for them.
        for stopping in self._stopping.values():
            stopping.join(timeout)
        for exporter in self._exporters.values():
            exporter.stop(timeout)
        self.spool.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
