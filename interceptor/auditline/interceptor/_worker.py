"""`AuditWorker`: the audit path's building, spooling and exporting in a process of its
own, so that they cost the serving process's GIL nothing.

The interceptor hands each call's raw capture (bytes, with the message types' proto
files the first time) to the worker over a pipe, in batches; unredacted bytes stay in
memory on both sides. Async captures go every `send_interval`; a fail-closed call's
go at once, and the call waits for the worker's acknowledgement that its events are
committed. What the worker promises (fail-closed, a worker that dies or hangs, bounded
memory and loss reports, admission) is the README's "The audit worker", one place.

`_worker_link` keeps the process and the pipe; this module decides what is sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from auditline.interceptor._capture_codec import Schemas, encode_record
from auditline.interceptor._record import AuditConfig, CallRecord, EventIds
from auditline.interceptor._types import AuditUnavailableError, EventDocument, Refused
from auditline.interceptor._worker_answers import Answers
from auditline.interceptor._worker_held import HeldEvents
from auditline.interceptor._worker_link import Supervision, WorkerLink
from auditline.interceptor._worker_outbox import Batch, Outbox
from auditline.interceptor._worker_process import HostedPipeline
from auditline.interceptor._worker_replies import LinkReplies

__all__ = ["AuditWorker"]

log = logging.getLogger("auditline.interceptor")


class AuditWorker(LinkReplies):
    """A worker process running the pipeline that `pipeline_factory` makes there.

    Give it to `AuditInterceptor` (or `AsyncAuditInterceptor`) as the sink. The factory
    must be importable by name (a module-level function, or a `functools.partial` of
    one): the worker process is started with `spawn`. `close()` it after the
    interceptor.
    """

    send_interval = 0.005  # seconds async captures wait to be sent with others
    max_batch = 512  # captures sent at once at most

    def __init__(
        self,
        pipeline_factory: Callable[[], HostedPipeline],
        *,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        # Longer than a spool's wait for its lock (60 s): a spool another process
        # holds is refused with that reason, not taken for a slow start.
        start_timeout: float = 90.0,
        ack_timeout: float = 30.0,
        max_held: int = 50_000,
    ) -> None:
        """
        Args:
            pipeline_factory: makes the pipeline, in the worker process.
            max_restarts: restarts within `restart_window` seconds after which the
                worker is given up.
            start_timeout: how long a worker may take to make its pipeline.
            ack_timeout: a worker that leaves a batch unanswered this long is taken
                for hung: it is killed, started again and sent the batch again.
            max_held: events held in this process for the worker at most (waiting
                to be sent, or for its acknowledgement). Past it, async events are
                counted as lost (in the log's next drop marker) and fail-closed
                calls are refused.
        """
        self._held = HeldEvents(max_held)
        # As the worker's spool last reported them: why it is degraded ("" when it is
        # not), and how many events it dropped and counted in a marker (async).
        self.degraded = ""
        self.dropped = 0
        # Told the reason whenever the worker's spool turns degraded, and "" when it
        # recovers (as `Spool.on_degraded`): health checks follow it.
        self.on_degraded: Callable[[str], None] = lambda reason: None
        self._config: AuditConfig | None = None
        self._schemas = Schemas()
        self._ids = EventIds()
        self._cond = threading.Condition()
        self._outbox = Outbox()
        self._answers = Answers()  # to the batches callers wait for
        self._refusal = ""  # why the worker's spool refuses calls now ("" when it does not)
        # Async events it answered before its spool wrote them (`_worker_unwritten`).
        self._unwritten = 0
        self._failed = ""  # set when the worker is given up
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._link = WorkerLink(
            pipeline_factory,
            Supervision(
                max_restarts=max_restarts,
                restart_window=restart_window,
                start_timeout=start_timeout,
                ack_timeout=ack_timeout,
            ),
            self._link_hooks(),
        )

    # --- lifecycle --------------------------------------------------------------------

    def start(self, config: AuditConfig) -> None:
        """Start the worker, building events as `config` says (the interceptor's)."""
        with self._cond:
            if self._config is not None:
                if self._config != dataclasses.replace(config, principal=None):
                    raise ValueError("an AuditWorker serves one interceptor")
                return
            # The principal resolver runs in the serving process, at capture time.
            self._config = dataclasses.replace(config, principal=None)
        self._link.start(self._config)
        for target, name in (
            (self._send, "auditline-worker-send"),
            (self._link.receive, "auditline-worker-acks"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def pid(self) -> int | None:
        """The worker process's id (for tests and operators)."""
        return self._link.pid

    @property
    def restarts(self) -> int:
        """How many times the worker was started again."""
        return self._link.restarts

    def close(self, timeout: float = 30.0) -> None:
        """Send what is pending, let the worker close its pipeline, and stop it. A
        second call does nothing."""
        with self._cond:
            if not self._link.started or self._closing:
                return
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        # The sender sends what came after the flush, then stops: before the quit,
        # after which the worker reads nothing.
        self._threads[0].join(timeout)
        self._link.quit(timeout)
        for thread in self._threads:
            thread.join(5)
        # Nothing answers from now on: a caller still waiting (one that came after
        # the flush, or one the flush ran out of time for) is refused, not left
        # waiting, and later events are counted as lost.
        with self._cond:
            self._failed = self._failed or "the audit worker is closed"
            self._answers.give_up()
            self._held.lose(self._outbox.drop_all(), "the audit worker closed first")
            if self._held.lost:  # in all (those a marker could tell of included)
                log.error("%d audit events were lost on their way to the worker", self._held.lost)

    # --- what the interceptor calls -------------------------------------------------

    def admit(self) -> None:
        """Refuse a call when the worker's spool refuses calls, or the worker is gone;
        fail-closed, also while `max_held` events wait for the worker."""
        reason = self._failed or self._refusal
        if not reason and self._held.full and self._fail_closed:
            reason = self._held.behind()
        if reason:
            raise AuditUnavailableError(reason)

    @property
    def _fail_closed(self) -> bool:
        return self._config is not None and self._config.fail_closed

    @property
    def lost(self) -> int:
        """Events never handed to the worker: past `max_held` (these are also counted
        in the log's next drop marker), or after the worker was given up."""
        return self._held.lost

    def emit_captures(self, records: Sequence[CallRecord], *, wait: bool) -> None:
        """Hand settled captures to the worker; with `wait`, return once their events
        are committed, or raise `AuditUnavailableError`."""
        encoded = [encode_record(record, self._ids.next()) for record in records]
        with self._cond:
            if self._add_captures(records, encoded, wait=wait):
                self._raise_for(self._await_batch(None))

    async def keep_captures(
        self,
        records: Sequence[CallRecord],
        *,
        refused_later: Refused | None = None,
    ) -> None:
        """`emit_captures(records, wait=True)` for a caller on an asyncio event loop: the
        loop awaits the worker's answer, rather than a thread blocking for it. Its
        captures are the worker's from the start: a caller cancelled meanwhile is
        gone, and if they are then refused, `refused_later` is told why."""
        encoded = [encode_record(record, self._ids.next()) for record in records]
        with self._cond:
            if not self._add_captures(records, encoded, wait=True):
                return
            answer = self._answers.future(self._send_waited_soon())
        try:
            self._raise_for(await answer)
        except asyncio.CancelledError:
            # Whatever comes is this caller's still (`Answers.then`, not `shield`: no
            # cost to callers that are not cancelled).
            self._answers.then(answer, functools.partial(self._late, refused_later))
            raise

    def _late(self, refused: Refused | None, answer: str | None) -> None:
        """The answer to a batch whose caller was cancelled: `refused`, unless committed."""
        try:
            self._raise_for(answer)
        except AuditUnavailableError as exc:
            if refused is not None:
                refused(exc)

    def _add_captures(
        self, records: Sequence[CallRecord], encoded: list[tuple[Any, ...]], *, wait: bool
    ) -> bool:
        """Holding the lock: add captures to what is pending; True when the caller is
        to wait for the answer to the batch that carries them."""
        if not self._failed:
            held = self._held.take(len(records), wait=wait)
            if not held:
                return False
            records, encoded = records[:held], encoded[:held]
        first = not self._outbox.pending
        for record, wire in zip(records, encoded, strict=True):
            files = self._schemas.needed(record)
            if files:
                self._outbox.pending.append(("schemas", files))
            self._outbox.pending.append(("capture", wire, wait))
        return self._enqueued(wait, first)

    def emit_documents(self, documents: Sequence[EventDocument], *, wait: bool) -> None:
        """Events built already (summaries, a server's own events)."""
        with self._cond:
            if not self._failed:
                documents = documents[: self._held.take(len(documents), wait=wait)]
                if not documents:
                    return
            first = not self._outbox.pending
            for d in documents:
                self._outbox.pending.append(("document", d.document, d.at_ns, d.end_ns, wait))
            if self._enqueued(wait, first):
                self._raise_for(self._await_batch(None))

    def notify(self, what: str, value: Any = None) -> None:
        """Tell the worker's pipeline something changed that it follows: it is called
        with `notice(what, value, at_ns)`, when it has that method (`auditline
        serve`'s follows its database). `value`: what it changed to, in plain values
        (str, int, bool, bytes, None, tuples of them). Sent with the next batch,
        ahead of the captures of calls that come after the change, with when it
        changed (`time.time_ns()`)."""
        with self._cond:
            if self._failed:
                return  # no worker to tell
            first = not self._outbox.pending
            self._outbox.pending.append(("notice", what, value, time.time_ns()))
            if first:
                self._cond.notify_all()

    def emit(self, event: Any) -> None:
        from auditline.interceptor._formats import event_document

        self.emit_documents([event_document(event)], wait=False)

    def _enqueued(self, wait: bool, first: bool) -> bool:
        """Holding the lock, after adding items (the `first` of a batch, or not): wake
        the sender for a new batch (which it sends `send_interval` later, or when full).
        True when the caller is to wait for the answer to the batch that carries them
        (`_await_batch`); once the worker is given up, they are lost (and a caller
        that waits is refused)."""
        if self._failed:
            self._held.lost += self._outbox.drop_pending()
            if wait:
                raise AuditUnavailableError(self._failed)
            return False
        if not wait and (first or len(self._outbox.pending) >= self.max_batch):
            self._cond.notify_all()
        return wait

    def _await_batch(self, timeout: float | None) -> str | None:
        """Holding the lock: have the pending items sent at once, and wait (without the
        lock) for the answer to their batch ("" or why not; None: no answer in time, or
        given up). Several callers may wait for one batch."""
        if self._failed:
            return None
        return self._answers.wait(self._send_waited(), self._cond, timeout)

    def _send_waited(self) -> int:
        """Holding the lock: have the pending items sent at once; the id of the batch
        that will carry them (the next: a batch takes all that is pending)."""
        self._outbox.urgent = True
        self._cond.notify_all()  # the sender
        return self._outbox.next_id

    def _send_waited_soon(self) -> int:
        """`_send_waited` for callers on an event loop: while a batch that callers wait
        for is being committed, their items are held back for the next one, which goes
        when it is answered (a group commit; no thread waits meanwhile). Sync callers
        hold a pool thread each while they wait: for them it was slower
        (`bench/README.md`, "Fail-closed calls on the asyncio server")."""
        outbox = self._outbox
        if outbox.waited_in_flight and len(outbox.pending) < self.max_batch:
            outbox.held_back = True
            return outbox.next_id
        return self._send_waited()

    def _raise_for(self, answer: str | None) -> None:
        """Raise `AuditUnavailableError` unless a batch's answer says it was committed."""
        if answer is None:
            raise AuditUnavailableError(self._failed or "the audit worker did not answer")
        if answer:
            raise AuditUnavailableError(answer)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything handed over so far is committed in the worker's spool."""
        if not self._link.started:
            return True
        with self._cond:
            self._outbox.pending.append(("flush",))
            return self._await_batch(timeout) == ""

    # --- the two threads ------------------------------------------------------------

    def _send(self) -> None:
        outbox = self._outbox
        while True:
            with self._cond:
                # Items held back for the next commit wait for the answer that sends
                # them (`_send_waited_soon`).
                self._cond.wait_for(
                    lambda: (
                        outbox.urgent
                        or self._closing
                        or bool(outbox.pending and not outbox.held_back)
                    ),
                    None,
                )
                if self._closing and not outbox.pending:
                    return
                if not outbox.urgent:
                    # Async captures: gathered for a moment, one write for many.
                    self._cond.wait_for(
                        lambda: outbox.urgent or len(outbox.pending) >= self.max_batch,
                        self.send_interval,
                    )
                batch = outbox.take(self._held.report())
            self._link.send(batch, register=functools.partial(self._register_sent, batch))

    def _register_sent(self, batch: Batch) -> None:
        with self._cond:
            if self._failed:  # given up while it was written: no one will answer it
                self._held.lose(batch.events, self._failed)
            else:
                self._outbox.sent(batch)
