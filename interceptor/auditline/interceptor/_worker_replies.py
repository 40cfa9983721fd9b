"""What the link to an audit worker process asks of `AuditWorker` (`LinkHooks`): its
answers and its spool's state taken, what to resend to a worker started again, and
what a worker that died or was given up leaves lost. Each runs holding the worker's
lock. `AuditWorker`'s base class."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from auditline.interceptor._capture_codec import Schemas
from auditline.interceptor._worker_answers import Answers
from auditline.interceptor._worker_held import UNENCODABLE, UNWRITTEN, HeldEvents
from auditline.interceptor._worker_link import LinkHooks
from auditline.interceptor._worker_outbox import Batch, Outbox

__all__ = ["LinkReplies"]

log = logging.getLogger("auditline.interceptor")


class LinkReplies:
    """The state below is the worker's, set in its constructor."""

    degraded: str
    dropped: int
    on_degraded: Callable[[str], None]
    _cond: threading.Condition
    _outbox: Outbox
    _held: HeldEvents
    _answers: Answers
    _schemas: Schemas
    _closing: bool
    _failed: str
    _refusal: str
    _unwritten: int

    def _send_waited(self) -> int:
        raise NotImplementedError  # `AuditWorker`'s

    def _link_hooks(self) -> LinkHooks:
        def locked(method: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any) -> Any:
                with self._cond:
                    return method(*args)

            return call

        return LinkHooks(
            answered=locked(self._answered_with_state),
            follow=locked(self._follow),
            died=locked(self._died),
            resend=locked(self._resend),
            oldest_sent_at=locked(self._outbox.oldest_sent_at),
            schema_files=locked(lambda: list(self._schemas.files)),
            closing=locked(lambda: self._closing),
            given_up=locked(self._on_given_up),
            unencodable=locked(self._unencodable),
        )

    def _resend(self) -> list[Batch]:
        """Holding the lock: what a worker started again is sent, in order. First the
        loss reports its spool has not kept (acknowledged or not: it counts each once),
        then every batch not acknowledged."""
        batches = self._outbox.unacknowledged()
        reports = self._held.unkept()
        if reports:
            batches.insert(0, self._outbox.sent_alone(reports))
        return batches

    def _unencodable(self, batch: Batch) -> None:
        """Holding the lock: a batch that could not be encoded (a bug, logged): its
        fail-closed callers are refused, its async events counted as lost."""
        self._held.count_lost(batch.unwaited_events(), UNENCODABLE)
        self._answered(batch.batch_id, "the audit event could not be encoded")

    def _answered_with_state(
        self, batch_ids: Sequence[int], error: str, state: Sequence[Any]
    ) -> None:
        for batch_id in batch_ids:
            self._answered(batch_id, error)
        if state:
            self._follow(state)

    def _on_given_up(self, reason: str) -> None:
        """Holding the lock: no worker will answer; callers are refused from now on."""
        self._failed = reason
        self._answers.give_up()
        self._held.lose(self._outbox.drop_all(), reason)
        self._cond.notify_all()

    def _died(self) -> None:
        """Holding the lock: the worker died. The async events it had answered and not
        written (its spool could not write) died with it: counted, in the next worker's
        drop marker (and in the log, in case none comes)."""
        if self._unwritten:
            log.error("%d audit events are lost: %s", self._unwritten, UNWRITTEN)
            self._held.count_lost(self._unwritten, UNWRITTEN)
            self._unwritten = 0

    def _answered(self, batch_id: int, error: str) -> None:
        """Holding the lock: a batch is done with ("" committed, else why not): its
        events are no longer held, and its callers are told."""
        batch = self._outbox.acknowledged(batch_id)
        if batch is not None:
            self._held.release(batch.events)
            self._answers.give(batch_id, error)
            if self._outbox.held_back and not self._outbox.waited_in_flight:
                self._send_waited()  # what waited for this batch's commit goes now

    def _follow(self, state: Sequence[Any]) -> None:
        """Take the state of the worker's spool it reported (see `_worker_process`)."""
        degraded = self.degraded
        self._refusal, self.degraded, self.dropped, reports_kept, self._unwritten = state
        self._held.kept(reports_kept)
        if self.degraded != degraded:
            self.on_degraded(self.degraded)
