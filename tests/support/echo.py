"""The test EchoService in sync and asyncio flavours, served in-process on loopback.

Each request's `action` says how the handler ends, so one service covers every
outcome the interceptor must record.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc
from auditline_testing.v1 import echo_pb2, echo_pb2_grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from auditline.interceptor import set_principal

SECRET_IN_EXCEPTION = "exception-secret-3f9a1c"

# Handlers asked to "wait" set the event named by their request text once they
# run, so a test can cancel a call it knows the server is executing.
STARTED: dict[str, threading.Event] = {}


# The text of every request a handler has seen: what ran, for the tests that check
# that nothing ran without its audit event.
RAN: set[str] = set()


def started(text: str) -> threading.Event:
    return STARTED.setdefault(text, threading.Event())


def rich_status(violations: int = 1) -> grpc.Status:
    """INVALID_ARGUMENT "bad text" with a BadRequest of `violations` (~45 bytes each)."""
    listed = [
        error_details_pb2.BadRequest.FieldViolation(field="text", description="must not be empty")
    ] * violations
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=listed))
    return rpc_status.to_status(
        status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="bad text", details=[detail])
    )


def _code(number: int) -> tuple[int, str]:
    """A `StatusCode`'s value, from its number."""
    return next(code.value for code in grpc.StatusCode if code.value[0] == number)


def reply(request: echo_pb2.EchoRequest, index: int = 0) -> echo_pb2.EchoResponse:
    return echo_pb2.EchoResponse(
        text=request.text, session_token=f"token-{request.text}", index=index
    )


class _ClientGone:
    """Blocks a sync handler until the client cancels or its deadline passes."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self.event = threading.Event()
        context.add_callback(self.event.set)

    def wait(self) -> None:
        self.event.wait(30)


# gRPC's interop tests (custom_metadata): echoed as initial and trailing metadata.
ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"


def _echoed(context: Any) -> tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]]:
    initial, trailing = [], []
    for key, value in context.invocation_metadata() or ():
        if key == ECHO_INITIAL:
            initial.append((key, value))
        elif key == ECHO_TRAILING:
            trailing.append((key, value))
    return tuple(initial), tuple(trailing)


def echo_metadata(context: grpc.ServicerContext) -> None:
    initial, trailing = _echoed(context)
    if initial:
        context.send_initial_metadata(initial)
    if trailing:
        context.set_trailing_metadata(trailing)


async def echo_metadata_async(context: Any) -> None:
    initial, trailing = _echoed(context)
    if initial:
        await context.send_initial_metadata(initial)
    if trailing:
        context.set_trailing_metadata(trailing)


def act(
    request: echo_pb2.EchoRequest, context: grpc.ServicerContext
) -> echo_pb2.EchoResponse | None:
    """The sync handler's behaviour for `request.action`."""
    RAN.add(request.text)
    action = request.action
    if action == "status":  # interop status_code_and_message: code `count`, message `text`
        context.abort(grpc.StatusCode(_code(request.count)), request.text)
    if action == "abort":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if action == "abort_with_status":
        context.abort_with_status(rich_status(request.count or 1))
    if action == "abort_text":
        context.abort(grpc.StatusCode.NOT_FOUND, request.text)
    if action == "set_code_then_raise":
        context.set_code(grpc.StatusCode.ALREADY_EXISTS)
        raise ValueError(SECRET_IN_EXCEPTION)
    if action == "set_code":
        context.set_code(grpc.StatusCode.ALREADY_EXISTS)
        context.set_details("already there")
        return echo_pb2.EchoResponse()
    if action == "raise":
        raise ValueError(SECRET_IN_EXCEPTION + request.text)  # the text: to make it long
    if action == "wait":
        gone = _ClientGone(context)
        started(request.text).set()
        gone.wait()
    if action == "principal":
        set_principal("alice", "AKALICE")
    if action == "none":
        return None
    if action == "none_ok_number":  # the OK code given as a number, then no response
        context.set_code(0)  # type: ignore[arg-type]
        return None
    if action == "number_code":  # a code as a number: the sync server sends UNKNOWN
        context.set_code(request.count)  # type: ignore[arg-type]
        context.set_details("numbered")
        return reply(request)
    if action == "abort_number":
        context.abort(request.count, "numbered")  # type: ignore[arg-type]
    return reply(request)


class SyncEcho(echo_pb2_grpc.EchoServiceServicer):
    def Echo(self, request: echo_pb2.EchoRequest, context: grpc.ServicerContext) -> Any:
        echo_metadata(context)
        return act(request, context)

    def CreateThing(self, request: echo_pb2.EchoRequest, context: grpc.ServicerContext) -> Any:
        echo_metadata(context)
        return act(request, context)

    def ListThings(
        self,
        request: echo_pb2.EchoRequest,
        context: grpc.ServicerContext,
    ) -> Iterator[echo_pb2.EchoResponse]:
        echo_metadata(context)
        RAN.add(request.text)
        for index in range(request.count or 3):
            if index == 1 and request.action:
                act(request, context)
            yield reply(request, index)

    def UploadThings(
        self,
        requests: Iterator[echo_pb2.EchoRequest],
        context: grpc.ServicerContext,
    ) -> Any:
        echo_metadata(context)
        received = []
        for request in requests:
            received.append(request)
            started(request.text).set()
        RAN.update(r.text for r in received)
        last = received[-1] if received else echo_pb2.EchoRequest()
        response = act(last, context)
        if response is not None:
            response.index = len(received)
        return response

    def ChatThings(
        self,
        requests: Iterator[echo_pb2.EchoRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[echo_pb2.EchoResponse]:
        echo_metadata(context)
        for index, request in enumerate(requests):
            RAN.add(request.text)
            if request.action:
                act(request, context)
            yield reply(request, index)


async def act_async(
    request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> echo_pb2.EchoResponse | None:
    """The asyncio handler's behaviour for `request.action`."""
    RAN.add(request.text)
    action = request.action
    if action == "status":
        await context.abort(grpc.StatusCode(_code(request.count)), request.text)
    if action == "abort":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if action == "abort_with_status":
        status = rich_status(request.count or 1)
        await context.abort(status.code, status.details, status.trailing_metadata)
    if action == "abort_text":
        await context.abort(grpc.StatusCode.NOT_FOUND, request.text)
    if action == "set_code_then_raise":
        context.set_code(grpc.StatusCode.ALREADY_EXISTS)
        raise ValueError(SECRET_IN_EXCEPTION)
    if action == "set_code":
        context.set_code(grpc.StatusCode.ALREADY_EXISTS)
        context.set_details("already there")
        return echo_pb2.EchoResponse()
    if action == "raise":
        raise ValueError(SECRET_IN_EXCEPTION + request.text)  # the text: to make it long
    if action == "number_code":
        context.set_code(request.count)  # type: ignore[arg-type]
        context.set_details("numbered")
        return reply(request)
    if action == "abort_number":
        await context.abort(request.count, "numbered")  # type: ignore[arg-type]
    if action == "wait":
        started(request.text).set()
        await asyncio.sleep(30)  # cancelled when the client goes away
    if action == "principal":
        set_principal("alice", "AKALICE")
    if action == "none":
        return None
    if action == "none_ok_number":
        context.set_code(0)  # type: ignore[arg-type]
        return None
    return reply(request)


class AsyncEcho(echo_pb2_grpc.EchoServiceServicer):
    """Async generators and `async for`; `reader_writer=True` uses context.read/write."""

    def __init__(self, reader_writer: bool = False) -> None:
        self.reader_writer = reader_writer

    async def Echo(self, request: Any, context: Any) -> Any:
        await echo_metadata_async(context)
        return await act_async(request, context)

    async def CreateThing(self, request: Any, context: Any) -> Any:
        await echo_metadata_async(context)
        return await act_async(request, context)

    def ListThings(self, request: Any, context: Any) -> Any:
        return (self._list_rw if self.reader_writer else self._list_gen)(request, context)

    async def _list_gen(self, request: Any, context: Any) -> AsyncIterator[Any]:
        await echo_metadata_async(context)
        RAN.add(request.text)
        for index in range(request.count or 3):
            if index == 1 and request.action:
                await act_async(request, context)
            yield reply(request, index)

    async def _list_rw(self, request: Any, context: Any) -> None:
        await echo_metadata_async(context)
        RAN.add(request.text)
        for index in range(request.count or 3):
            if index == 1 and request.action:
                await act_async(request, context)
            await context.write(reply(request, index))

    async def UploadThings(self, requests: Any, context: Any) -> Any:
        await echo_metadata_async(context)
        received = []
        if self.reader_writer:
            while (item := await context.read()) is not grpc.aio.EOF:
                received.append(item)
                started(item.text).set()
        else:
            async for item in requests:
                received.append(item)
                started(item.text).set()
        RAN.update(r.text for r in received)
        last = received[-1] if received else echo_pb2.EchoRequest()
        response = await act_async(last, context)
        if response is not None:
            response.index = len(received)
        return response

    def ChatThings(self, requests: Any, context: Any) -> Any:
        return (self._chat_rw if self.reader_writer else self._chat_gen)(requests, context)

    async def _chat_gen(self, requests: Any, context: Any) -> AsyncIterator[Any]:
        await echo_metadata_async(context)
        index = 0
        async for request in requests:
            RAN.add(request.text)
            if request.action:
                await act_async(request, context)
            yield reply(request, index)
            index += 1

    async def _chat_rw(self, requests: Any, context: Any) -> None:
        await echo_metadata_async(context)
        index = 0
        while (request := await context.read()) is not grpc.aio.EOF:
            RAN.add(request.text)
            if request.action:
                await act_async(request, context)
            await context.write(reply(request, index))
            index += 1


def _generic_handler(servicer: AsyncEcho) -> grpc.GenericRpcHandler:
    """The aio servicer's handlers, with each method's real function (generator or not)."""
    handlers: dict[str, Any] = {
        "Echo": grpc.unary_unary_rpc_method_handler(servicer.Echo),
        "CreateThing": grpc.unary_unary_rpc_method_handler(servicer.CreateThing),
        "ListThings": grpc.unary_stream_rpc_method_handler(
            servicer._list_rw if servicer.reader_writer else servicer._list_gen
        ),
        "UploadThings": grpc.stream_unary_rpc_method_handler(servicer.UploadThings),
        "ChatThings": grpc.stream_stream_rpc_method_handler(
            servicer._chat_rw if servicer.reader_writer else servicer._chat_gen
        ),
    }
    for name, handler in handlers.items():
        method = echo_pb2.DESCRIPTOR.services_by_name["EchoService"].methods_by_name[name]
        request_class = echo_pb2.EchoRequest
        assert method.input_type.full_name == request_class.DESCRIPTOR.full_name
        handlers[name] = handler._replace(
            request_deserializer=request_class.FromString,
            response_serializer=echo_pb2.EchoResponse.SerializeToString,
        )
    return grpc.method_handlers_generic_handler("auditline_testing.v1.EchoService", handlers)


def _target(address: str, port: int) -> str:
    """Where a client reaches a server bound to `address` (port 0 resolved)."""
    if address.startswith("unix:"):
        return address
    return f"{address.rpartition(':')[0]}:{port}"


class SyncServer:
    """A thread-pool gRPC server with the given interceptors."""

    def __init__(self, interceptors: Sequence[Any], address: str = "127.0.0.1:0") -> None:
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8), interceptors=list(interceptors)
        )
        echo_pb2_grpc.add_EchoServiceServicer_to_server(SyncEcho(), self.server)
        port = self.server.add_insecure_port(address)
        self.target = _target(address, port)
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0).wait()


class AsyncServer:
    """A `grpc.aio` server on its own event loop thread, for sync test clients."""

    def __init__(
        self,
        interceptors: Sequence[Any],
        *,
        reader_writer: bool = False,
        address: str = "127.0.0.1:0",
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        servicer = AsyncEcho(reader_writer)

        async def start() -> tuple[grpc.aio.Server, int]:
            server = grpc.aio.server(interceptors=list(interceptors))
            server.add_generic_rpc_handlers([_generic_handler(servicer)])
            port = server.add_insecure_port(address)
            await server.start()
            return server, port

        self.server, port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        self.target = _target(address, port)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
