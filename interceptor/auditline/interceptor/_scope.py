"""What a handler (or an inner interceptor) tells the audit interceptor about its call.

The interceptor opens a scope around each call; these functions write to it and
do nothing outside an audited call.
"""

from __future__ import annotations

import contextvars
import dataclasses

from auditline.audit.v1 import event_pb2
from auditline.interceptor._types import Principal

__all__ = [
    "CallScope",
    "RelatedEvent",
    "record_event",
    "set_log_type",
    "set_principal",
]


@dataclasses.dataclass(frozen=True, slots=True)
class RelatedEvent:
    """An event a handler recorded with its call (`record_event`)."""

    event: event_pb2.ApiEvent
    # May be counted in a `CallsSummarized` event with its call, when the call is.
    summarize: bool = True


class CallScope:
    """The audit interceptor's notes on the call being served. The interceptor's own
    state of the call extends it (`CallState`): one object per call, not two."""

    __slots__ = ("log_type", "principal", "related")

    def __init__(self) -> None:
        self.principal: Principal | None = None
        self.log_type: int | None = None
        # Events the handler recorded (IAM events, say), kept with the call's own;
        # made on the first, as most calls record none.
        self.related: list[RelatedEvent] | None = None


SCOPE: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar(
    "auditline_call_scope", default=None
)


def set_log_type(log_type: int) -> None:
    """File the current call's audit event under another log (`LogType`), for example
    `LOG_TYPE_SETTINGS` for calls that change the audit settings themselves."""
    scope = SCOPE.get()
    if scope is not None:
        scope.log_type = log_type


def set_principal(account_name: str, access_key: str = "") -> None:
    """Name the caller of the current call in its audit event.

    Call it from the handler or an inner interceptor once the caller is known
    (for example after checking a token); outside an audited call it does nothing.
    """
    scope = SCOPE.get()
    if scope is not None:
        scope.principal = Principal(account_name, access_key)


def record_event(event: event_pb2.ApiEvent, *, summarize: bool = True) -> bool:
    """Record another event as part of the current call, for example an IAM event of
    a login: it reaches the sink together with the call's own event, just before
    it, and in fail-closed mode the call completes only once both are durable.

    When the call itself is only counted in a `CallsSummarized` event (an
    unauthenticated caller past its rate), so is this event, unless `summarize` is
    False: then it is recorded on its own all the same (a block of an address, say).

    The event is recorded as it is now (not redacted; a copy, so that the log gets
    its own id and node even when a handler records one object in several calls, and
    later changes to it are not seen). Returns False outside an audited call; the
    caller then hands the event to its sink itself.
    """
    scope = SCOPE.get()
    if scope is None:
        return False
    if scope.related is None:
        scope.related = []
    recorded = event_pb2.ApiEvent()
    recorded.CopyFrom(event)
    scope.related.append(RelatedEvent(recorded, summarize))
    return True
