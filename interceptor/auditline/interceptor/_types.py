"""The interceptor's public value types and the `Sink` protocol."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from auditline.audit.v1 import event_pb2

__all__ = [
    "AuditUnavailableError",
    "EventDocument",
    "Metadata",
    "PlainStartError",
    "Principal",
    "PrincipalInput",
    "PrincipalResolver",
    "Refused",
    "Sink",
]

Metadata = tuple[tuple[str, str | bytes], ...]
# Told why a fail-closed call's events were refused, after the call stopped waiting.
Refused = Callable[[Exception], object]


class AuditUnavailableError(RuntimeError):
    """The audit log cannot record a call: a fail-closed interceptor answers UNAVAILABLE."""


class PlainStartError(Exception):
    """Why an audit pipeline could not be made, in a message that quotes nothing
    secret (a spool in use, a rule that does not compile): an audit worker passes it
    on whole, where other errors are told by their type alone."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EventDocument:
    """An event as protobuf's JSON mapping of `ApiEvent` writes it, with its times.

    What the interceptor hands to a sink that stores JSON (the spool): the same
    content as the `ApiEvent` message, without the cost of building one.
    """

    document: dict[str, Any]
    at_ns: int  # when the call arrived
    end_ns: int  # when it ended


class Sink(Protocol):
    """Where finished events go. `emit` is called from one thread, in order.

    A sink may also have:

    - `admit() -> None`, called before each call runs; raising
      `AuditUnavailableError` refuses the call with UNAVAILABLE (the spool does
      this when it is full, or in fail-closed mode when it cannot write);
    - `emit_documents(documents: Sequence[EventDocument], *, wait: bool) -> None`
      instead of needing `emit`: the events of one call (the call's own last),
      to be stored together. With `wait`, it returns once they are durable, or
      raises `AuditUnavailableError` having stored none of them;
    - `async keep_documents(documents, *, refused_later)`: `emit_documents(...,
      wait=True)` awaited on an asyncio event loop (the asyncio interceptor's
      fail-closed calls use it, not a thread, where the sink has it). A caller
      cancelled while it waits is gone; a refusal that comes later is given to
      `refused_later(exc)`, on the caller's loop.
    """

    def emit(self, event: event_pb2.ApiEvent) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who made a call, as the audit log names them."""

    account_name: str
    access_key: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class PrincipalInput:
    """What a principal resolver sees of a call, at its end."""

    method: str
    metadata: Metadata
    peer: str
    auth_context: Mapping[str, Iterable[bytes]]


PrincipalResolver = Callable[[PrincipalInput], Principal | None]
