"""A server of each flavour (sync, asyncio, asyncio reader/writer handlers) with the
audit interceptor first in its chain, for the interceptor's tests; in each audit mode
(events built in the serving process, or in an `AuditWorker`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from auditline_testing.v1 import echo_pb2, echo_pb2_grpc

from auditline.audit.v1 import event_pb2
from auditline.interceptor import (
    AsyncAuditInterceptor,
    AuditInterceptor,
    MemorySink,
    Sink,
)
from tests.support.echo import AsyncServer, SyncServer
from tests.support.worker_pipelines import SpooledEvents

KEY = b"test-hmac-key-of-16+"


FLAVOURS = ("sync", "aio", "aio-reader-writer")
# Where events are built: in the serving process, or in an audit worker process.
MODES = ("in-process", "worker")


Event = event_pb2.ApiEvent


class Harness:
    """A server of one flavour with the audit interceptor first in its chain.

    In `mode="worker"` (without a `sink` of the test's own) the events are built and
    spooled by an `AuditWorker`, and `sink` reads them back from its spool, as a
    `MemorySink` would show them.
    """

    def __init__(
        self,
        flavour: str,
        *,
        mode: str = "in-process",
        inner: Sequence[Any] = (),
        address: str = "127.0.0.1:0",
        sink: Any = None,
        **options: Any,
    ) -> None:
        assert mode in MODES, mode
        self.flavour = flavour
        self.spooled = SpooledEvents() if mode == "worker" and sink is None else None
        memory = MemorySink()
        # What the test reads events from, and what the interceptor hands them to.
        self.sink: Any = sink if sink is not None else (self.spooled or memory)
        audit_sink: Sink = sink if sink is not None else memory
        if self.spooled is not None:
            audit_sink = self.spooled.worker
        options.setdefault("hmac_key", KEY)
        self.interceptor: AuditInterceptor | AsyncAuditInterceptor
        self.server: SyncServer | AsyncServer
        if flavour == "sync":
            self.interceptor = AuditInterceptor(audit_sink, **options)
            self.server = SyncServer([self.interceptor, *inner], address)
        else:
            self.interceptor = AsyncAuditInterceptor(audit_sink, **options)
            self.server = AsyncServer(
                [self.interceptor, *inner],
                address=address,
                reader_writer=flavour == "aio-reader-writer",
            )
        if self.spooled is not None:
            self.spooled.attach(self.interceptor)
        self.channel = grpc.insecure_channel(self.server.target)
        self.stub = echo_pb2_grpc.EchoServiceStub(self.channel)

    def events(self, count: int) -> list[Event]:
        """Exactly `count` events. The client may see the status before the server
        finished recording the call, so wait for them rather than only flush."""
        self.sink.wait_for(count)
        assert self.interceptor.flush(10)
        assert len(self.sink.events) == count
        return list(self.sink.events)

    def one_event(self) -> Event:
        (event,) = self.events(1)
        return event

    def close(self) -> None:
        self.channel.close()
        self.server.stop()
        self.interceptor.close()
        if self.spooled is not None:
            self.spooled.close()


def raw_call(channel: grpc.Channel, method: str) -> Callable[[bytes], bytes]:
    """A unary call that sends and receives bytes as they are (no serializers)."""
    call: Any = channel.unary_unary(method)  # typed Never without serializers
    return call  # type: ignore[no-any-return]


def requests(*items: echo_pb2.EchoRequest) -> Iterator[echo_pb2.EchoRequest]:
    return iter(items)


R = echo_pb2.EchoRequest
