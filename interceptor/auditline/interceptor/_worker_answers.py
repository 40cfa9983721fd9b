"""`Answers`: the answers to the batches that callers wait for (fail-closed calls, a
flush), from an `AuditWorker`'s acknowledgements. One event per batch, so that an
acknowledgement wakes its own callers and no others; callers on an asyncio event loop
await a future instead, resolved on their loop (no thread is blocked for them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

__all__ = ["Answers"]

log = logging.getLogger("auditline.interceptor")


class _Answer:
    __slots__ = ("done", "error", "futures", "waiters")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: str | None = None  # "" when committed, else why not
        self.waiters = 0  # threads blocked in `wait`
        self.futures: dict[asyncio.AbstractEventLoop, list[asyncio.Future[str | None]]] = {}


Then = Callable[[str | None], object]


class _Late:
    """The answers that came to cancelled callers' futures, and what each caller wants
    done with its answer when it comes (`Answers.then`). Touched only on the
    futures' own loop's thread, so the two always meet, whichever comes first."""

    def __init__(self) -> None:
        self.answers: dict[asyncio.Future[str | None], str | None] = {}
        self.then: dict[asyncio.Future[str | None], Then] = {}


def _resolve(futures: list[asyncio.Future[str | None]], error: str | None, late: _Late) -> None:
    """On the futures' loop: tell the callers that still wait; for those cancelled
    meanwhile, do what they left to do with it, or keep it for them."""
    for future in futures:
        if not future.done():
            future.set_result(error)
        elif future.cancelled():
            then = late.then.pop(future, None)
            if then is None:
                late.answers[future] = error
                continue
            try:
                then(error)
            except Exception:  # a bug: the other callers are still told
                log.exception("a cancelled audit call's answer could not be handled")


class Answers:
    """Not thread-safe: the worker's lock guards it (the lock `wait` is given)."""

    def __init__(self) -> None:
        self._by_batch: dict[int, _Answer] = {}
        self._late = _Late()

    def _answer(self, batch_id: int) -> _Answer:
        answer = self._by_batch.get(batch_id)
        if answer is None:
            answer = self._by_batch[batch_id] = _Answer()
        return answer

    def wait(self, batch_id: int, lock: threading.Condition, timeout: float | None) -> str | None:
        """Holding `lock`: wait, without it, for the batch's answer ("" or why not;
        None: none in time, or the worker was given up). Several callers may wait for
        one batch."""
        answer = self._answer(batch_id)
        answer.waiters += 1
        lock.release()
        try:
            answer.done.wait(timeout)
        finally:
            lock.acquire()
            answer.waiters -= 1
            if not answer.waiters and not answer.futures:
                self._by_batch.pop(batch_id, None)
        return answer.error

    def future(self, batch_id: int) -> asyncio.Future[str | None]:
        """On an event loop's thread: a future of the batch's answer (as `wait`'s). A
        caller cancelled while awaiting it says what to do with the answer (`then`)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()
        self._answer(batch_id).futures.setdefault(loop, []).append(future)
        return future

    def then(self, future: asyncio.Future[str | None], then: Then) -> None:
        """On the future's loop, its caller cancelled: `then(answer)` when the answer
        comes, or now if it has come. Not under the worker's lock: `_Late` is the
        loop's own."""
        if not future.cancelled():
            then(future.result())  # answered before the cancellation reached the caller
            return
        late = self._late
        if future in late.answers:
            then(late.answers.pop(future))
        else:
            late.then[future] = then

    def give(self, batch_id: int, error: str) -> None:
        """Tell the callers waiting for a batch its answer (if any wait)."""
        answer = self._by_batch.get(batch_id)
        if answer is not None:
            answer.error = error
            self._tell(answer)
            if not answer.waiters:
                del self._by_batch[batch_id]

    def give_up(self) -> None:
        """No answer will come: wake every caller (they find none)."""
        for batch_id, answer in list(self._by_batch.items()):
            self._tell(answer)
            if not answer.waiters:
                del self._by_batch[batch_id]

    def _tell(self, answer: _Answer) -> None:
        answer.done.set()
        # One wake-up of each loop for all its callers of the batch.
        for loop, futures in answer.futures.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
                loop.call_soon_threadsafe(_resolve, futures, answer.error, self._late)
        answer.futures = {}
