"""`CallState`: what the interceptor keeps of one call while it runs, filled the same way
by the sync and the asyncio flavour and read once, when the call ends, by
`AuditCore.capture`."""

from __future__ import annotations

import time
from typing import Any

from google.protobuf import message

from auditline.interceptor._methods import MethodInfo
from auditline.interceptor._scope import CallScope

__all__ = ["CallState"]


class CallState(CallScope):
    """One call's state, and the scope its handler writes to (`set_principal`, ...).
    Plain slots rather than a dataclass: made on every call."""

    __slots__ = (
        "admitted",
        "cls",
        "first",
        "info",
        "last",
        "received",
        "sent",
        "started",
        "unary_response",
    )

    def __init__(self, info: MethodInfo, request_class: type[message.Message] | None) -> None:
        super().__init__()
        self.info = info
        self.started = time.time_ns()
        self.admitted = False  # the audit log took the call (it may still be refused)
        self.received = 0  # request messages read, malformed or not
        self.first: bytes | None = None  # the first request message, as received
        self.cls = request_class  # its type: the expected one until parsed
        self.sent = 0  # response messages handed to gRPC
        self.last: Any = None  # the last of them (a message object)
        self.unary_response = False  # a single response, sent only with an OK status

    def on_receive(self, raw: bytes, item: Any) -> None:
        """A request message arrived (`item`: parsed, or None when it could not be)."""
        if self.received == 0:
            self.first = raw
            if isinstance(item, message.Message):
                self.cls = type(item)
        self.received += 1

    def on_send(self, item: Any) -> None:
        self.sent += 1
        self.last = item
