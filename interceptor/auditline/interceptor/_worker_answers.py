"""`Answers`: the answers to the batches that callers wait for (fail-closed calls, a
flush), from an `AuditWorker`'s acknowledgements. One event per batch, so that an
acknowledgement wakes its own callers and no others."""

from __future__ import annotations

import threading

__all__ = ["Answers"]


class _Answer:
    __slots__ = ("done", "error", "waiters")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: str | None = None  # "" when committed, else why not
        self.waiters = 0


class Answers:
    """Not thread-safe: the worker's lock guards it (the lock `wait` is given)."""

    def __init__(self) -> None:
        self._by_batch: dict[int, _Answer] = {}

    def wait(self, batch_id: int, lock: threading.Condition, timeout: float | None) -> str | None:
        """Holding `lock`: wait, without it, for the batch's answer ("" or why not;
        None: none in time, or the worker was given up). Several callers may wait for
        one batch."""
        answer = self._by_batch.get(batch_id)
        if answer is None:
            answer = self._by_batch[batch_id] = _Answer()
        answer.waiters += 1
        lock.release()
        try:
            answer.done.wait(timeout)
        finally:
            lock.acquire()
            answer.waiters -= 1
            if not answer.waiters:
                del self._by_batch[batch_id]
        return answer.error

    def give(self, batch_id: int, error: str) -> None:
        """Tell the callers waiting for a batch its answer (if any wait)."""
        answer = self._by_batch.get(batch_id)
        if answer is not None:
            answer.error = error
            answer.done.set()

    def give_up(self) -> None:
        """No answer will come: wake every caller (they find none)."""
        for answer in self._by_batch.values():
            answer.done.set()
