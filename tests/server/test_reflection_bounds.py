"""Reflection needs no token, and each of its streams holds a thread of the sync
server while it waits for a question: a node serves a few at once, and cancels one
that asks nothing for a while (16 streams that asked nothing stopped `auditline
serve`: no login, call or health check was answered)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from auditline.server.reflection import V1_SERVICE_NAME, enable_reflection
from tests.support.processes import wait_for

LIST = reflection_pb2.ServerReflectionRequest(list_services="")


class _Questions:
    """A request stream the test feeds: each `ask` sends one question."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()

    def ask(self) -> None:
        self._queue.put(LIST)

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[Any]:
        while (question := self._queue.get()) is not None:
            yield question


@pytest.fixture
def server() -> Iterator[grpc.Channel]:
    """Two threads, one reflection stream at once, idle for at most half a second."""
    served = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), served)
    enable_reflection([health.SERVICE_NAME], served, max_streams=1, idle_seconds=0.5)
    port = served.add_insecure_port("127.0.0.1:0")
    served.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    channel.close()
    served.stop(0).wait()


def _stream(channel: grpc.Channel, questions: _Questions) -> Any:
    method: Any = channel.stream_stream(
        f"/{V1_SERVICE_NAME}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return method(iter(questions), timeout=30)


def test_one_stream_too_many_is_refused_and_other_calls_are_served(
    server: grpc.Channel,
) -> None:
    first = _Questions()
    answers = _stream(server, first)
    first.ask()
    assert next(answers).list_services_response.service  # the stream holds its slot
    second = _Questions()
    second.close()
    with pytest.raises(grpc.RpcError) as refused:
        list(_stream(server, second))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    stub: Any = health_pb2_grpc.HealthStub(server)  # its stubs omit the methods
    check = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    first.ask()  # a question in time keeps it open
    assert next(answers).list_services_response.service
    first.close()
    assert list(answers) == []


def test_a_stream_that_asks_nothing_is_cancelled_and_its_slot_freed(
    server: grpc.Channel,
) -> None:
    quiet = _Questions()
    answers = _stream(server, quiet)
    ended: list[grpc.StatusCode] = []

    def read() -> None:
        try:
            list(answers)
        except grpc.RpcError as error:
            ended.append(error.code())

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(10)
    assert ended == [grpc.StatusCode.CANCELLED]
    quiet.close()

    def answered() -> bool | None:
        """A new stream is answered once the server has seen the cancelled one end."""
        again = _Questions()
        again.ask()
        again.close()
        try:
            return True if list(_stream(server, again)) else None
        except grpc.RpcError as error:
            refused.append(error.code())
            return None

    refused: list[grpc.StatusCode] = []
    wait_for(answered, timeout=10, what="the slot given back")
    assert set(refused) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}
