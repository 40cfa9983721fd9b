"""The part of the audit interceptor shared by the sync and asyncio flavours.

On the request path the interceptors only *capture*: a `CallRecord` holding the
raw request and response (which gRPC had to produce anyway), the status, the
peer and the metadata. A sync call's record waits for the call's end (`CallEnds`)
to settle what the client saw. A background worker turns records into redacted
events (`EventBuilder`) and hands them to the sink; an audit worker takes the
records themselves. In fail-closed mode the request thread hands its call's events
over itself and waits until the sink has them durable (an asyncio call awaits it).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc

from auditline.audit.v1 import event_pb2
from auditline.interceptor._builder import EventBuilder, event_of
from auditline.interceptor._call_ends import CallEnds
from auditline.interceptor._call_state import CallState
from auditline.interceptor._delivery import Delivery
from auditline.interceptor._record import AuditConfig, CallRecord, span_ids
from auditline.interceptor._status import as_status_code, as_text
from auditline.interceptor._summaries import Counting
from auditline.interceptor._types import (
    Metadata,
    PrincipalInput,
    Refused,
    Sink,
)

__all__ = ["AuditCore"]

log = logging.getLogger("auditline.interceptor")


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


@dataclasses.dataclass(frozen=True, slots=True)
class _Events:
    """Events to deliver on their own (those of a summarized call that are not)."""

    events: tuple[event_pb2.ApiEvent, ...]
    cap: int  # their call's body cap (`EventBuilder.body_cap`)


_Item = CallRecord | _Flush | _Events


class AuditCore:
    """Builds events from records and feeds the sink from one background thread (an
    audit worker is handed each sync call's record as the call ends, instead).

    Records are appended to a deque (no wake-up); the thread drains it in batches
    every `poll_interval` seconds, so a busy server pays one thread switch per
    batch rather than one per call.
    """

    poll_interval = 0.01
    # A call whose status has not gone out after this long is recorded as it stands.
    settle_timeout = 30.0

    def __init__(self, sink: Sink, config: AuditConfig) -> None:
        self.config = config
        self.builder = EventBuilder(config)
        self._delivery = Delivery(sink, self.builder)
        self._worker = self._delivery.worker
        if self._worker is not None:
            self._worker.start(config)
        self.admit: Callable[[], None] = getattr(sink, "admit", None) or (lambda: None)
        self.counting = Counting(config.summaries, config.policy, node_id=config.node_id)
        self.worker_cpu_seconds = 0.0  # the background thread's CPU time
        self._pending: collections.deque[_Item] = collections.deque()
        self._ends = CallEnds()  # records of sync calls whose status is on its way
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        # When the server began to cancel the calls still running (`stopping`).
        self._server_cancels_from: float | None = None

    # --- request path -------------------------------------------------------

    def capture(
        self,
        *,
        call: CallState,
        context: Any,
        error: BaseException | None,
        ended_by_client: bool,
        with_response: bool = True,
        outcome: Callable[[], bool | None] | None = None,
        peer: str | None = None,
        auth_context: Mapping[str, Iterable[bytes]] | None = None,
    ) -> CallRecord:
        """Snapshot a finished call. Cheap: references and a few reads, nothing more.

        `peer` and `auth_context`, when given, were read while the call was alive
        (grpc.aio may finish a streaming handler after gRPC released the call).
        Without `with_response` the record holds no response body (an abort's).
        """
        metadata: Metadata = context.invocation_metadata() or ()
        if peer is None:
            peer = str(context.peer())
        principal = call.principal
        if principal is None and self.config.principal is not None:
            if auth_context is None:
                auth_context = context.auth_context()
            try:
                principal = self.config.principal(
                    PrincipalInput(call.info.full_method, tuple(metadata), peer, auth_context or {})
                )
            except Exception as exc:
                # The embedder's resolver failed: the call is recorded all the same, its
                # caller unnamed, and the error named by its type only (its message may
                # quote the credential it could not read).
                log.error(
                    "the principal resolver failed on %s (%s)",
                    call.info.full_method,
                    type(exc).__name__,
                )
                principal = None
        trace_id, span_id = span_ids()
        ended = time.time_ns()
        remaining = context.time_remaining()
        record = CallRecord(
            info=call.info,
            started_ns=call.started,
            ended_ns=ended,
            peer=peer,
            metadata=metadata,
            request=call.first,
            request_class=call.cls,
            request_count=call.received,
            # The handler's own object: the call is over, nothing else touches it,
            # and the background worker needs no parse to read it.
            response=call.last if with_response else None,
            response_count=call.sent,
            code=context.code(),
            details=context.details(),
            error=type(error) if error is not None else None,
            ended_by_client=ended_by_client,
            deadline_ns=ended + int(remaining * 1e9) if remaining is not None else None,
            trailing_metadata=context.trailing_metadata(),
            principal=principal,
            trace_id=trace_id,
            span_id=span_id,
            log_type=call.log_type,
            related=tuple(call.related) if call.related else (),
            unary_response=call.unary_response,
            outcome=outcome,
        )
        return self.cancelled_by(record) if ended_by_client else record

    def submit(
        self,
        record: CallRecord,
        *,
        wait: bool,
        when_ended: Callable[[Callable[[], None]], bool] | None = None,
    ) -> None:
        """Hand a record on. With `wait` (fail-closed mode), emit it now and raise
        `AuditUnavailableError` if the sink could not keep it; otherwise queue it for
        the background worker. A record with an `outcome` and `when_ended` (the sync
        context's `add_callback`) is handed on when its call has ended."""
        if self.counting.summarizers and self._summarized(record):
            return
        if wait:
            with self._delivery.as_refusal():
                self._delivery.hand_over(record, wait=True)
            return
        if when_ended is not None and record.outcome is not None:
            token = self._ends.add(record)
            if self._thread is None:
                self._start_worker()  # it takes the records whose end never comes
            if not when_ended(functools.partial(self._ended, token)):
                self._ended(token)  # it has ended already
            return
        self._queue(record)

    async def keep(self, record: CallRecord, *, refused_later: Refused) -> None:
        """`submit(record, wait=True)` for the asyncio flavour, without blocking its
        event loop (`Delivery.keep`). Cancelled while it waits, the caller is gone: a
        refusal that comes later is counted and given to `refused_later`."""
        if self.counting.summarizers and self._summarized(record):
            return
        with self._delivery.as_refusal():
            await self._delivery.keep(record, refused_later=self._delivery.counted(refused_later))

    @property
    def sink_errors(self) -> int:
        return self._delivery.sink_errors

    def _ended(self, token: int) -> None:
        """A call has ended (on gRPC's polling thread): its record, settled, goes on."""
        record = self._ends.take(token)
        if record is not None:
            self._hand_on(self._settled(record) or record)

    def _hand_on(self, record: CallRecord) -> None:
        """A settled record: to the audit worker at once, else to be built."""
        if self._worker is None:
            self._queue(record)
        else:
            self._delivery.deliver([record])

    def _queue(self, item: _Item) -> None:
        if self._thread is None:
            self._start_worker()
        self._pending.append(item)
        if self._closed and (self._thread is None or not self._thread.is_alive()):
            # Closed, and its last round is over: nothing will take it. Said in the
            # log, the one place left (an asyncio call closed with its event loop
            # after the interceptor closed, say).
            what = item.info.full_method if isinstance(item, CallRecord) else "related events"
            log.error("an audit event came after the interceptor closed and is lost: %s", what)

    def _summarized(self, record: CallRecord) -> bool:
        """Count the call in a summary instead of recording it, where it is due."""
        summarizer = self.counting.summarizer_for(
            method=record.info.full_method,
            described=record.info.described,
            authenticated=record.principal is not None,
            allowed=lambda: self.builder.status(record)[0] == grpc.StatusCode.OK,
            source=lambda: self.builder.source(record)[0],
        )
        if summarizer is None:
            return False
        source = self.builder.source(record)[0]
        summarizer.count(
            source=source,
            method=record.info.full_method,
            code=self.builder.status(record)[0].name,
            related=[r.event.event_name for r in record.related if r.summarize],
            at_ns=record.ended_ns,
        )
        kept = tuple(r.event for r in record.related if not r.summarize)
        if kept:
            self._queue(_Events(kept, self.builder.body_cap(record)))
        elif self._thread is None:
            self._start_worker()  # it writes the summaries
        return True

    def unavailable(self, record: CallRecord, reason: str) -> CallRecord:
        """The record of a call whose answer was replaced by UNAVAILABLE because its
        events could not be kept (fail-closed): what the client saw, and why."""
        code, details = self.builder.status(record)
        return dataclasses.replace(
            record,
            code=grpc.StatusCode.UNAVAILABLE,
            details=f"{reason}; the handler had answered {code.name}"
            + (f": {details}" if details else ""),
            error=None,
            ended_by_client=False,
            trailing_metadata=None,
            response=None,
            response_count=0,
        )

    # --- background ---------------------------------------------------------

    def _start_worker(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                thread = threading.Thread(target=self._run, name="auditline-events", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        pending = self._pending
        # Settled records, handed on together: before anything queued behind them.
        ready: list[CallRecord] = []
        while True:
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            started = time.thread_time()
            closed = self._closed
            # Calls whose end never came (or, closing, has not come yet): as they stood.
            stale = None if closed else time.monotonic() - self.settle_timeout
            for record in self._ends.stale(stale):
                self._hand_on(record)
            while pending:
                item = pending.popleft()
                if isinstance(item, CallRecord):
                    ready.append(item)  # settled already, or taken as it stood
                else:
                    self._delivery.deliver(ready)
                    self._pass_on(item)
            self._delivery.deliver(ready)
            for summarizer in self.counting.summarizers:
                self._delivery.emit_summaries(summarizer.due(everything=closed))
            self.worker_cpu_seconds += time.thread_time() - started
            if closed:
                return

    def _pass_on(self, item: _Flush | _Events) -> None:
        if isinstance(item, _Flush):
            item.done.set()
        else:
            self._delivery.deliver_events(item.events, item.cap)

    def _settled(self, record: CallRecord) -> CallRecord | None:
        """The record with what the client saw, once its call has terminated (None before)."""
        if record.outcome is None:
            return record
        cancelled = record.outcome()
        if cancelled is None:
            return None
        if not cancelled:
            return record
        return self.cancelled_by(dataclasses.replace(record, ended_by_client=True))

    def stopping(self, grace: float | None) -> None:
        """The server stops: the calls still running `grace` seconds from now are
        cancelled by it, not by their clients."""
        self._server_cancels_from = time.monotonic() + (grace or 0.0)

    def cancelled_by(self, record: CallRecord) -> CallRecord:
        """A call cancelled once the server cancels the calls still running as it
        stops: its client saw UNAVAILABLE, "Cancelling all calls" (gRPC's answer), not
        its own cancel; unless its deadline had passed (found by a review helper: a
        shutdown's calls were logged as the clients' cancels)."""
        since = self._server_cancels_from
        if not record.ended_by_client or since is None or time.monotonic() < since:
            return record
        if record.deadline_ns is not None and record.ended_ns >= record.deadline_ns:
            return record
        details = "Cancelling all calls"
        answered = as_status_code(record.code)
        if answered == grpc.StatusCode.UNAVAILABLE and as_text(record.details).startswith(details):
            # Settled so at capture already (the sync server's outcome comes later).
            return dataclasses.replace(record, ended_by_client=False)
        if answered in (None, grpc.StatusCode.OK):
            if record.error is None:  # it finished: what it did is done (rules read it)
                details += "; the handler had answered OK"
        # (grpc.aio may have set gRPC's own answer on the context already.)
        elif as_text(record.details) != details:
            details += f"; the handler had answered {answered.name}: {as_text(record.details)}"
        return dataclasses.replace(
            record, ended_by_client=False, code=grpc.StatusCode.UNAVAILABLE, details=details
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every call finished so far has reached the sink."""
        if self._thread is None or (self._closed and not self._thread.is_alive()):
            return True  # nothing started, or everything delivered by `close`
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._ends.wait_for_earlier(timeout):
            return False  # a call's status is still on its way
        marker = _Flush()
        self._pending.append(marker)
        self._wake.set()
        return marker.done.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver what is pending (summaries too), then stop the worker."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._wake.set()
            thread.join(timeout)
        else:
            for summarizer in self.counting.summarizers:
                self._delivery.emit_summaries(summarizer.due(everything=True))

    # --- for tests and tools ------------------------------------------------

    def build_document(self, record: CallRecord) -> dict[str, Any]:
        return self.builder.document(record, self._delivery.ids.next())

    def build_event(self, record: CallRecord) -> event_pb2.ApiEvent:
        return event_of(self.build_document(record))
