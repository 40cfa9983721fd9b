"""`Answers`: an audit worker's answers reach the threads and the asyncio calls that wait
for a batch, each once, and nothing is left behind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from auditline.interceptor._worker_answers import Answers
from tests.support.processes import wait_for


def _from_another_thread(lock: threading.Condition, act: Callable[[], None]) -> None:
    """Do `act` holding the lock on a thread of its own, as the worker's acknowledgements
    are given."""

    def run() -> None:
        with lock:
            act()

    threading.Thread(target=run, daemon=True).start()


def _thread_waiting(answers: Answers, lock: threading.Condition, batch_id: int) -> list[object]:
    """A thread waiting for a batch's answer; its answer lands in the list returned."""
    got: list[object] = []
    entered = threading.Event()

    def wait() -> None:
        with lock:
            entered.set()
            got.append(answers.wait(batch_id, lock, timeout=30))

    threading.Thread(target=wait, daemon=True).start()
    assert entered.wait(10)
    return got


@pytest.mark.parametrize("answer", ["", "the disk is full"])
def test_threads_and_asyncio_callers_of_one_batch_get_its_answer(answer: str) -> None:
    answers, lock = Answers(), threading.Condition()
    thread_got = _thread_waiting(answers, lock, 7)

    async def main() -> object:
        with lock:
            future = answers.future(7)
        _from_another_thread(lock, lambda: answers.give(7, answer))
        return await asyncio.wait_for(future, 30)

    assert asyncio.run(main()) == answer
    assert wait_for(lambda: thread_got or None, timeout=30, what="the thread's answer") == [answer]
    with lock:
        assert not answers._by_batch  # nothing kept for an answered batch


def test_giving_up_answers_none_to_every_caller() -> None:
    answers, lock = Answers(), threading.Condition()

    async def main() -> list[object]:
        with lock:
            futures = [answers.future(1), answers.future(2)]
        _from_another_thread(lock, answers.give_up)
        return list(await asyncio.wait_for(asyncio.gather(*futures), 30))

    assert asyncio.run(main()) == [None, None]
    # Under the lock: the giving thread may still be between telling the last batch's
    # callers and forgetting it.
    with lock:
        assert not answers._by_batch


def test_a_cancelled_caller_is_skipped_and_a_closed_loop_is_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers, lock = Answers(), threading.Condition()

    async def main() -> object:
        with lock:
            cancelled, waiting = answers.future(3), answers.future(3)
        cancelled.cancel()
        _from_another_thread(lock, lambda: answers.give(3, ""))
        return await asyncio.wait_for(waiting, 30)

    assert asyncio.run(main()) == ""
    # A loop that ended before its batch was answered: nobody to tell, and no error.
    loop = asyncio.new_event_loop()
    with lock:
        loop.run_until_complete(_register(answers, 4))
    loop.close()
    with lock:
        answers.give(4, "")
        assert not answers._by_batch
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def _register(answers: Answers, batch_id: int) -> None:
    answers.future(batch_id)


@pytest.mark.parametrize("answered_first", [False, True])
def test_a_cancelled_caller_gets_its_answer_later_whichever_comes_first(
    answered_first: bool,
) -> None:
    """A cancelled caller's capture is still with the worker: what it says is given to
    the caller's `then`, whether the answer reaches the loop before the caller asks for
    it or after."""
    answers, lock = Answers(), threading.Condition()
    got: list[object] = []

    async def main() -> None:
        with lock:
            future = answers.future(5)
        future.cancel()  # as the call's task cancels the future it awaits
        if answered_first:
            with lock:
                answers.give(5, "refused")
            await asyncio.sleep(0)  # the loop runs the answer's delivery
            answers.then(future, got.append)
        else:
            answers.then(future, got.append)
            with lock:
                answers.give(5, "refused")
            await asyncio.sleep(0)

    asyncio.run(main())
    assert got == ["refused"]
    assert not answers._late.answers
    assert not answers._late.then
