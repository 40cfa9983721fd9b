"""The async events an audit worker answered before its spool wrote them: it answers
a round at once while its spool cannot write (a full disk), and after
`ACK_AT_THE_LATEST` in any case, rather than keep the serving process's calls and
memory waiting. Such events live only in the worker's memory until written. The
worker tells how many with its spool's state, and if it dies before they are written
the serving process counts that many as lost, in the log's next drop marker. (They
were lost uncounted: found by a review helper.)"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

__all__ = ["AnsweredUnwritten"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Answered:
    events: int
    committed: Callable[[], bool]


class AnsweredUnwritten:
    """The worker's side: the rounds answered uncommitted, until their events are."""

    def __init__(self) -> None:
        self._answered: list[_Answered] = []

    def answered(self, events: int, committed: Callable[[], bool]) -> None:
        """A round of `events` async events was answered; `committed` tells when they
        are written."""
        if events and not committed():
            self._answered.append(_Answered(events=events, committed=committed))

    def count(self) -> int:
        """How many of them are not written yet."""
        if self._answered:
            self._answered = [a for a in self._answered if not a.committed()]
        return sum(a.events for a in self._answered)
