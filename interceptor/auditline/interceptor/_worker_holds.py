"""`DeletionHolds`: what an audit worker's spool may not delete yet, so that a worker
started again recognises resent events by their ids rather than writing them twice."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = ["DeletionHolds"]


class _Holding(Protocol):
    def hold(self, after: int | None) -> None: ...


class DeletionHolds:
    """The events of the rounds not answered (those they brought, and those of the dead
    worker's they were found to hold), and, in a worker started again, all of them
    until every resent batch is taken (the serving process says so after them). A
    resent event is recognised by its id, which a deleted one no longer has: it would
    be written twice. Told to the spool's store (`SpoolFreeing.hold`)."""

    def __init__(self, store: _Holding, *, held_at_open: int | None) -> None:
        self._store = store
        self._at_open = held_at_open
        self._round: int | None = None

    def taking(self, numbered: int) -> None:
        """Before a round is taken: hold what is numbered after `numbered` (its new
        events), unless an older round holds more already."""
        if self._round is None:
            self._round = numbered
            self._apply()

    def settled(self, after_seqs: Iterable[int], *, resent_all: bool) -> None:
        """After a round: hold from the oldest of the rounds still unanswered (what
        each holds is numbered after its `after_seq`, the dead worker's events it found
        included); then, once every batch resent to this worker is taken (`resent_all`),
        lift the hold at open. In that order: lifted first, the hold would move up to
        where `taking` put it, and delete the dead worker's events the round found
        before it was answered."""
        oldest = min(after_seqs, default=None)
        if oldest != self._round:
            self._round = oldest
            self._apply()
        if resent_all and self._at_open is not None:
            self._at_open = None
            self._apply()

    def _apply(self) -> None:
        holds = [h for h in (self._at_open, self._round) if h is not None]
        self._store.hold(min(holds) if holds else None)
