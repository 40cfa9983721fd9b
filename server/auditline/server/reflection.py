"""Server reflection on both `grpc.reflection.v1` and `grpc.reflection.v1alpha`.

grpcio-reflection serves only v1alpha, while grpcurl and newer clients ask for
v1 first. The two versions are the same messages under another package name,
so v1 is served by the same servicer with v1alpha's (de)serializers, and its
file descriptor is derived from v1alpha's so `describe` works on it too.

Anyone may ask, with no token, and each stream holds one of the sync server's
threads while it waits for the next question: so a node serves a few streams at
once (`max_streams`), and cancels one that asks nothing for `IDLE_SECONDS`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from auditline.server.call_slots import CallSlots

__all__ = ["IDLE_SECONDS", "V1ALPHA_SERVICE_NAME", "V1_SERVICE_NAME", "enable_reflection"]

V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"

_V1_FILE = "grpc/reflection/v1/reflection.proto"
# grpcurl and grpcui ask their questions back to back, then close the stream.
IDLE_SECONDS = 10.0


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    file_proto = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(file_proto)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    file_proto.name = _V1_FILE
    file_proto.package = "grpc.reflection.v1"
    file_proto.options.Clear()
    for message in file_proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in file_proto.service:
        service.options.Clear()
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(file_proto.SerializeToString())


class _ReflectionServicer(reflection.ReflectionServicer):
    """Also resolves method names (`pkg.Service.Method`), as `grpcurl describe` asks."""

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        pool = descriptor_pool.Default()
        try:
            pool.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            parent, _, member = fully_qualified_name.rpartition(".")
            try:
                service = pool.FindServiceByName(parent)
            except KeyError:
                service = None
            if service is not None and member in service.methods_by_name:
                fully_qualified_name = parent
        # grpcio-reflection's own lookup (untyped, private): kept, only the name changes.
        lookup = super()._file_containing_symbol  # type: ignore[misc]
        return lookup(request, fully_qualified_name)


class _Bounded:
    """A reflection stream's behavior: at most `max_streams` at once (one more is
    refused RESOURCE_EXHAUSTED), each cancelled when it asks nothing for `idle`
    seconds. Unbounded, 16 streams that asked nothing stopped `auditline serve`."""

    def __init__(
        self, inner: Callable[[Iterator[Any], Any], Iterator[Any]], max_streams: int, idle: float
    ) -> None:
        self.inner = inner
        self.idle = idle
        self._slots = CallSlots(max_streams)

    def __call__(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        give_back = self._slots.take(context)
        if give_back is None:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._slots.size} reflection streams are open on this node, the most it "
                "serves at once; try again later",
            )
        try:
            yield from self.inner(self._questions(requests, context), context)
        finally:
            give_back()

    def _questions(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        while True:
            # gRPC wakes the thread waiting for a message when its call is cancelled,
            # from any thread.
            timer = threading.Timer(self.idle, context.cancel)
            timer.daemon = True
            timer.start()
            try:
                question = next(requests)
            except StopIteration:
                return
            finally:
                timer.cancel()
            yield question


def enable_reflection(
    service_names: Iterable[str],
    server: grpc.Server,
    *,
    max_streams: int,
    idle_seconds: float = IDLE_SECONDS,
) -> None:
    """Serve reflection (v1 and v1alpha) for `service_names` and for itself, at most
    `max_streams` streams at once, each cancelled after `idle_seconds` without a
    question."""
    _add_v1_descriptor(descriptor_pool.Default())
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    servicer = _ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        _Bounded(servicer.ServerReflectionInfo, max_streams, idle_seconds),
        request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
        response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler})
            for service in (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
        ]
    )
