"""A `CallRecord` as plain values (`marshal`-able), and back: how a capture crosses from
the serving process to the audit worker (`_worker`) without being built there.

Messages travel as bytes with their type's full name. The worker process may not have
imported the embedder's protos, so `Schemas` ships each message type's file (and the
files it depends on) once, before the first capture that needs it, and the worker adds
them to its descriptor pool (`load_schemas`).
"""

from __future__ import annotations

import functools
import marshal
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from auditline.audit.v1 import event_pb2
from auditline.interceptor._methods import MethodInfo
from auditline.interceptor._record import CallRecord
from auditline.interceptor._scope import RelatedEvent
from auditline.interceptor._types import Principal

__all__ = [
    "Schemas",
    "decode_record",
    "encode_record",
    "load_schemas",
    "message_classes",
    "pack",
    "unpack",
]

# The wire form of a record: a tuple of these fields, in this order.
_FIELDS = (
    "event_id",
    "full_method",
    "service",
    "method",
    "event_name",
    "activity",
    "omit_response_body",
    "started_ns",
    "ended_ns",
    "peer",
    "metadata",
    "request",
    "request_class",
    "request_count",
    "response",
    "response_class",
    "response_count",
    "code",
    "details",
    "error",
    "ended_by_client",
    "deadline_ns",
    "trailing_metadata",
    "principal",
    "trace_id",
    "span_id",
    "log_type",
    "related",
    "unary_response",
)


def pack(value: Any) -> bytes:
    """A message between the serving process and its worker, as bytes."""
    return marshal.dumps(value)


def unpack(data: bytes) -> Any:
    """`pack`'s value back. marshal, because it is the fastest for plain values; safe
    here: only ever bytes from the other end of a private pipe between a process
    and the worker it started, never from outside."""
    return marshal.loads(data)  # noqa: S302


class Schemas:
    """The serving side's note of which proto files the worker has been sent."""

    def __init__(self) -> None:
        self._sent: set[str] = set()
        self._seen: set[type | None] = set()  # the types of records already looked at
        self.files: list[bytes] = []  # every file sent, in order: a restarted worker's first

    def needed(self, record: CallRecord) -> list[bytes]:
        """The serialized files the worker lacks to read the record's messages,
        dependencies first; each only once."""
        seen = self._seen
        request_class, request, response = (
            record.request_class,
            type(record.request),
            type(record.response),
        )
        if request_class in seen and request in seen and response in seen:
            return []  # the common case: types met before
        out: list[bytes] = []
        for cls in message_classes(record):
            if cls is not None:
                self._add(cls.DESCRIPTOR.file, out)
        seen.update((request_class, request, response))
        self.files += out
        return out

    def _add(self, file: Any, out: list[bytes]) -> None:  # a FileDescriptor (upb's or not)
        if file.name in self._sent:
            return
        self._sent.add(file.name)
        for dependency in file.dependencies:
            self._add(dependency, out)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        out.append(proto.SerializeToString())


def load_schemas(files: Iterable[bytes]) -> None:
    """Add shipped proto files to this process's default pool (those it lacks)."""
    pool = descriptor_pool.Default()
    for raw in files:
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        try:
            pool.FindFileByName(proto.name)
        except KeyError:
            pool.Add(proto)


@functools.cache
def _message_class(full_name: str) -> type[message.Message]:
    return message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(full_name)
    )


@functools.cache
def _error_type(name: str) -> type[BaseException]:
    # Only the name of an uncaught exception is ever recorded.
    return type(name, (Exception,), {})


def _wire_message(value: bytes | message.Message | None) -> tuple[bytes | None, str | None]:
    if isinstance(value, message.Message):
        return value.SerializeToString(), value.DESCRIPTOR.full_name
    return value, None


def _pairs(metadata: Iterable[tuple[str, str | bytes]]) -> tuple[tuple[str, str | bytes], ...]:
    # gRPC's metadata items are named tuples, which marshal does not take.
    return tuple((key, value) for key, value in metadata)


def _code(code: Any) -> int | None:
    if isinstance(code, grpc.StatusCode):
        return int(code.value[0])
    return None if code is None else int(code)


def message_classes(record: CallRecord) -> tuple[type[message.Message] | None, ...]:
    """The message types the worker needs to read the record."""
    response = type(record.response) if isinstance(record.response, message.Message) else None
    request = record.request_class
    if isinstance(record.request, message.Message):
        request = type(record.request)
    return request, response


def encode_record(record: CallRecord, event_id: str) -> tuple[Any, ...]:
    """The record as a tuple of plain values (its call has settled)."""
    info = record.info
    request, request_class = _wire_message(record.request)
    response, response_class = _wire_message(record.response)
    if request_class is None and record.request_class is not None:
        request_class = record.request_class.DESCRIPTOR.full_name
    principal = record.principal
    return (
        event_id,
        info.full_method,
        info.service,
        info.method,
        info.event_name,
        info.activity,
        info.omit_response_body,
        record.started_ns,
        record.ended_ns,
        record.peer,
        _pairs(record.metadata),
        request,
        request_class,
        record.request_count,
        response,
        response_class,
        record.response_count,
        _code(record.code),
        record.details,
        record.error.__name__ if record.error is not None else None,
        record.ended_by_client,
        record.deadline_ns,
        _pairs(record.trailing_metadata) if record.trailing_metadata is not None else None,
        (principal.account_name, principal.access_key) if principal is not None else None,
        record.trace_id,
        record.span_id,
        record.log_type,
        tuple((r.event.SerializeToString(), r.summarize) for r in record.related),
        record.unary_response,
    )


def decode_record(wire: tuple[Any, ...]) -> tuple[CallRecord, str]:
    """The record and its event id, from `encode_record`'s tuple (schemas loaded)."""
    f = dict(zip(_FIELDS, wire, strict=True))
    request_class = _message_class(f["request_class"]) if f["request_class"] else None
    response: message.Message | bytes | None = f["response"]
    if f["response_class"] and isinstance(response, bytes):
        response = _message_class(f["response_class"]).FromString(response)
    principal = f["principal"]
    info = MethodInfo(
        full_method=f["full_method"],
        service=f["service"],
        method=f["method"],
        event_name=f["event_name"],
        activity=f["activity"],
        request_class=request_class,
        omit_response_body=f["omit_response_body"],
    )
    record = CallRecord(
        info=info,
        started_ns=f["started_ns"],
        ended_ns=f["ended_ns"],
        peer=f["peer"],
        metadata=f["metadata"],
        request=f["request"],
        request_class=request_class,
        request_count=f["request_count"],
        response=response,
        response_count=f["response_count"],
        code=f["code"],
        details=f["details"],
        error=_error_type(f["error"]) if f["error"] else None,
        ended_by_client=f["ended_by_client"],
        deadline_ns=f["deadline_ns"],
        trailing_metadata=f["trailing_metadata"],
        principal=Principal(*principal) if principal is not None else None,
        trace_id=f["trace_id"],
        span_id=f["span_id"],
        log_type=f["log_type"],
        related=tuple(
            RelatedEvent(event_pb2.ApiEvent.FromString(raw), summarize)
            for raw, summarize in f["related"]
        ),
        unary_response=f["unary_response"],
    )
    return record, f["event_id"]
