"""The serving side's end of the audit worker's pipe (`WorkerLink`), without a process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from auditline.interceptor._capture_codec import unpack
from auditline.interceptor._worker_link import LinkHooks, Supervision, WorkerLink
from auditline.interceptor._worker_outbox import Batch


class _Pipe:
    """Records what is written to the worker."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def send_bytes(self, data: bytes) -> None:
        self.messages.append(unpack(data))


def test_a_batch_that_cannot_be_encoded_still_sends_its_loss_reports() -> None:
    """Its callers are refused; its report of lost events goes on in its turn (a later
    report counted first would make the worker take this one for counted)."""
    answered: list[tuple[tuple[int, ...], str]] = []

    def answer(ids: Sequence[int], error: str, state: Sequence[Any]) -> None:
        answered.append((tuple(ids), error))

    hooks = LinkHooks(
        answered=answer,
        follow=lambda state: None,
        resend=list,
        oldest_sent_at=lambda: None,
        schema_files=list,
        closing=lambda: False,
        given_up=lambda reason: None,
    )
    supervision = Supervision(max_restarts=0, restart_window=1, start_timeout=1, ack_timeout=1)
    link = WorkerLink(lambda: None, supervision, hooks)  # type: ignore[arg-type,return-value]
    pipe = _Pipe()
    link._conn = pipe  # type: ignore[assignment]
    report = ("lost", 3, "the audit worker was behind", 1, 7)
    unencodable = ("capture", object(), True)  # a bug's value: marshal refuses it
    batch = Batch(batch_id=4, items=[unencodable, report], events=1, waited=True)
    link.send(batch, register=lambda: None)
    assert answered == [((4,), "the audit event could not be encoded")]
    assert pipe.messages == [("batch", 4, False, [report])]
