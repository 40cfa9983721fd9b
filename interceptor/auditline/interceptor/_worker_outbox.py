"""`Outbox`: what a serving process has for its audit worker — the items pending for
the next batch, and the batches sent and not yet acknowledged (resent to a worker
started again)."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["EVENT_KINDS", "Batch", "Outbox"]

# The kinds of item that carry events (what `HeldEvents` counts); the last field of
# each says whether a caller waits for its commit.
EVENT_KINDS = ("capture", "document")


def _events(items: list[tuple[Any, ...]]) -> int:
    return sum(item[0] in EVENT_KINDS for item in items)


def _waited(items: list[tuple[Any, ...]]) -> bool:
    """Whether callers wait for the items' commit."""
    return any(item[0] in EVENT_KINDS and item[-1] for item in items)


@dataclasses.dataclass(slots=True, kw_only=True)
class Batch:
    """Items sent together; kept until the worker acknowledges them."""

    batch_id: int
    items: list[tuple[Any, ...]]
    events: int  # the captures and documents among the items
    waited: bool  # fail-closed callers wait for its commit
    sent_at: float = 0.0  # when it was last written to a worker (monotonic)

    def unwaited_events(self) -> int:
        """The captures and documents among its items that no caller waits for."""
        return sum(item[0] in EVENT_KINDS and not item[-1] for item in self.items)


class Outbox:
    """Not thread-safe: the worker's lock guards it."""

    def __init__(self) -> None:
        self.pending: list[tuple[Any, ...]] = []  # items of the next batch
        self.urgent = False  # a caller waits for the next batch: it goes at once
        self.next_id = 1  # the next batch's (it takes every pending item)
        # Batches sent alone are numbered apart, downwards from -1: callers waiting for
        # the pending items' commit are promised `next_id`, which must stay theirs.
        self._alone_id = 0
        # Waited items held back for the next batch until the waited batches in flight
        # are answered (`AuditWorker._send_waited_soon`).
        self.held_back = False
        self.waited_in_flight = 0  # batches callers wait for, taken and not yet answered
        self._unacked: dict[int, Batch] = {}

    def drop_pending(self) -> int:
        """Forget the pending items (the worker was given up); their events."""
        events = _events(self.pending)
        self.pending = []
        return events

    def drop_all(self) -> int:
        """Forget every item, pending or sent and unacknowledged (no worker will take
        them any more); their events."""
        events = self.drop_pending() + sum(batch.events for batch in self._unacked.values())
        self._unacked = {}
        self.waited_in_flight = 0
        self.urgent = self.held_back = False
        return events

    def take(self, extra: list[tuple[Any, ...]]) -> Batch:
        """The pending items, and then `extra`, as the next batch."""
        items = self.pending
        items.extend(extra)
        batch = Batch(
            batch_id=self.next_id, items=items, events=_events(items), waited=_waited(items)
        )
        self.next_id += 1
        self.pending = []
        self.urgent = self.held_back = False
        # Counted from here, not from `sent`: a caller that comes before the batch is
        # written is held back for the next too.
        self.waited_in_flight += batch.waited
        return batch

    def sent_alone(self, items: list[tuple[Any, ...]]) -> Batch:
        """Items that go in a batch of their own, sent at once (to a worker started
        again, ahead of the batches it had not acknowledged)."""
        self._alone_id -= 1
        batch = Batch(
            batch_id=self._alone_id, items=items, events=_events(items), waited=_waited(items)
        )
        self.waited_in_flight += batch.waited
        self.sent(batch)
        return batch

    def sent(self, batch: Batch) -> None:
        """A batch goes out: kept until acknowledged."""
        self._unacked[batch.batch_id] = batch

    def acknowledged(self, batch_id: int) -> Batch | None:
        """The batch the worker answered (None: not one of ours any more)."""
        batch = self._unacked.pop(batch_id, None)
        if batch is not None:
            self.waited_in_flight -= batch.waited
        return batch

    def unacknowledged(self) -> list[Batch]:
        """Every batch a worker may not have, oldest first (those sent alone first)."""
        return sorted(self._unacked.values(), key=lambda b: b.batch_id)

    def oldest_sent_at(self) -> float | None:
        """When the longest-unanswered batch was written (monotonic), if any was."""
        sent = [batch.sent_at for batch in self._unacked.values() if batch.sent_at]
        return min(sent) if sent else None
