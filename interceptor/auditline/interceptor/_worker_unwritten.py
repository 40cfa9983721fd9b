"""The async events an audit worker answered before its spool wrote them: it answers
a round at once while its spool cannot write (a full disk), and after
`ACK_AT_THE_LATEST` in any case, rather than keep the serving process's calls and
memory waiting. Such events live only in the worker's memory until written. The
worker tells how many with its spool's state, and if it dies before they are written
the serving process counts that many as lost, in the log's next drop marker. (They
were lost uncounted: found by a review helper.)"""

from __future__ import annotations

import collections

from auditline.interceptor._spool_records import QueuedDocuments

__all__ = ["AnsweredUnwritten"]


class AnsweredUnwritten:
    """The worker's side: the rounds answered uncommitted, until their events are.
    The spool writes in order, so they are looked at from the oldest on, and only
    until one is not written yet (a full disk can pile up tens of thousands)."""

    def __init__(self) -> None:
        self._answered: collections.deque[QueuedDocuments] = collections.deque()
        self._events = 0

    def answered(self, queued: QueuedDocuments) -> None:
        """A round's async events were answered (`queued.committed` tells when they
        are written)."""
        if queued.events and not queued.committed():
            self._answered.append(queued)
            self._events += queued.events

    def count(self) -> int:
        """How many of them are not written yet."""
        while self._answered and self._answered[0].committed():
            self._events -= self._answered.popleft().events
        return self._events
