"""A server of each flavour (sync, asyncio, asyncio reader/writer handlers) with the
audit interceptor first in its chain, for the interceptor's tests."""

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
)
from tests.support.echo import AsyncServer, SyncServer

KEY = b"test-hmac-key"


FLAVOURS = ("sync", "aio", "aio-reader-writer")


Event = event_pb2.ApiEvent


class Harness:
    """A server of one flavour with the audit interceptor first in its chain."""

    def __init__(
        self,
        flavour: str,
        *,
        inner: Sequence[Any] = (),
        address: str = "127.0.0.1:0",
        sink: Any = None,
        **options: Any,
    ) -> None:
        self.sink = sink if sink is not None else MemorySink()
        options.setdefault("hmac_key", KEY)
        self.interceptor: AuditInterceptor | AsyncAuditInterceptor
        self.server: SyncServer | AsyncServer
        if flavour == "sync":
            self.interceptor = AuditInterceptor(self.sink, **options)
            self.server = SyncServer([self.interceptor, *inner], address)
        else:
            self.interceptor = AsyncAuditInterceptor(self.sink, **options)
            self.server = AsyncServer(
                [self.interceptor, *inner],
                address=address,
                reader_writer=flavour == "aio-reader-writer",
            )
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


def raw_call(channel: grpc.Channel, method: str) -> Callable[[bytes], bytes]:
    """A unary call that sends and receives bytes as they are (no serializers)."""
    call: Any = channel.unary_unary(method)  # typed Never without serializers
    return call  # type: ignore[no-any-return]


def requests(*items: echo_pb2.EchoRequest) -> Iterator[echo_pb2.EchoRequest]:
    return iter(items)


R = echo_pb2.EchoRequest
