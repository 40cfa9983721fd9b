"""`Delivery`: records and events handed to the sink in the form it takes — an audit
worker the captures themselves, a sink with `emit_documents` the built documents,
any other sink `ApiEvent` messages — and its failures counted."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

from auditline.audit.v1 import event_pb2
from auditline.interceptor._builder import EventBuilder, event_of
from auditline.interceptor._record import CallRecord, EventIds
from auditline.interceptor._types import AuditUnavailableError, EventDocument, Refused, Sink
from auditline.interceptor._worker import AuditWorker

__all__ = ["Delivery"]

log = logging.getLogger("auditline.interceptor")


def _unavailable(exc: BaseException) -> AuditUnavailableError:
    """A sink's failure as the call's answer (its type named; its message, which may
    quote what the sink was given, not)."""
    if isinstance(exc, AuditUnavailableError):
        return exc
    return AuditUnavailableError(f"the audit log cannot record this call ({type(exc).__name__})")


def _refused_later(refused: Refused, keeping: asyncio.Future[None]) -> None:
    failure = None if keeping.cancelled() else keeping.exception()
    if failure is not None:
        refused(_unavailable(failure))


class Delivery:
    def __init__(self, sink: Sink, builder: EventBuilder) -> None:
        self.sink = sink
        self.builder = builder
        # With an audit worker the captures are built there, not here.
        self.worker = sink if isinstance(sink, AuditWorker) else None
        self._emit_documents: Callable[..., None] | None = getattr(sink, "emit_documents", None)
        self._keep_documents: Callable[..., Awaitable[None]] | None = getattr(
            sink, "keep_documents", None
        )
        self.ids = EventIds()
        self.sink_errors = 0
        self.delivered = 0  # records handed on by the background thread

    def hand_over(self, record: CallRecord, *, wait: bool) -> None:
        """Build the record's events in the form the sink takes, and give them to it
        (to an audit worker: the capture itself)."""
        if self.worker is not None:
            self.worker.emit_captures([record], wait=wait)
            return
        if self._emit_documents is not None:
            self._emit_documents(self.documents(record), wait=wait)
            return
        for document in self.documents(record):
            self.sink.emit(event_of(document.document))

    async def keep(self, record: CallRecord, *, refused_later: Refused) -> None:
        """`hand_over(record, wait=True)` without blocking the caller's event loop: an
        audit worker's answer, or the commit of a sink with `keep_documents` (the
        spool), is awaited on the loop; other sinks block a thread of the loop's
        executor meanwhile. Cancelled while it waits, the keeping goes on: a refusal
        that comes after is given to `refused_later`."""
        if self.worker is not None:
            await self.worker.keep_captures([record], refused_later=refused_later)
            return
        if self._keep_documents is not None:
            await self._keep_documents(self.documents(record), refused_later=refused_later)
            return
        keeping = asyncio.ensure_future(asyncio.to_thread(self.hand_over, record, wait=True))
        try:
            await asyncio.shield(keeping)
        except asyncio.CancelledError:
            keeping.add_done_callback(functools.partial(_refused_later, refused_later))
            raise

    def counted(self, refused: Refused) -> Refused:
        """`refused`, then the failure counted (as `as_refusal` does): whoever sees the
        count sees the refusal's own record handed on already."""

        def then_count(exc: Exception) -> None:
            try:
                refused(exc)
            finally:
                self.sink_errors += 1

        return then_count

    @contextlib.contextmanager
    def as_refusal(self) -> Iterator[None]:
        """Around a fail-closed hand-over: a failure is counted, and raised as
        `AuditUnavailableError` (the call's answer)."""
        try:
            yield
        except AuditUnavailableError:
            self.sink_errors += 1
            raise
        except Exception as exc:
            self.sink_errors += 1
            raise _unavailable(exc) from None

    def deliver(self, records: list[CallRecord]) -> None:
        """Hand settled records on (an audit worker takes them in one go), and empty
        the list. Failures are counted and logged, never raised."""
        if not records:
            return
        if self.worker is not None:
            try:
                self.worker.emit_captures(records, wait=False)
            except Exception as exc:
                self.failed(exc)
            self.delivered += len(records)
            records.clear()
            return
        for record in records:
            try:
                self.hand_over(record, wait=False)
            except Exception as exc:
                self.failed(exc)
            self.delivered += 1
            if self.delivered % 16 == 0:
                # Hand the GIL to request threads now and then, so a large batch does
                # not stall calls in flight (their p99 latency).
                time.sleep(0)
        records.clear()

    def deliver_events(self, events: Sequence[event_pb2.ApiEvent], cap: int) -> None:
        """Events made already (those of a summarized call that are not summarized),
        cut at their call's body cap as they would have been with it."""
        try:
            documents = [self.builder.related_document(e, self.ids.next, cap) for e in events]
            if self._emit_documents is not None:
                self._emit_documents(documents, wait=False)
            else:
                for document in documents:
                    self.sink.emit(event_of(document.document))
        except Exception as exc:
            self.failed(exc)

    def emit_summaries(self, summaries: Sequence[EventDocument]) -> None:
        for summary in summaries:
            try:
                if self._emit_documents is not None:
                    self._emit_documents([summary], wait=False)
                else:
                    self.sink.emit(event_of(summary.document))
            except Exception as exc:
                self.failed(exc)

    def documents(self, record: CallRecord) -> list[EventDocument]:
        return self.builder.documents(record, event_id=self.ids.next(), next_id=self.ids.next)

    def failed(self, exc: Exception) -> None:
        self.sink_errors += 1
        if self.sink_errors == 1 or self.sink_errors % 1000 == 0:
            log.error("audit sink failed (%d so far): %s", self.sink_errors, type(exc).__name__)
