"""Turns a protobuf message into a JSON-ready dict with its secrets redacted.

The walk is driven by field options: `(auditline.audit.v1.redact)` chooses the
mode, and protobuf's standard `debug_redact = true` alone means REMOVE. It
reads the message and never changes it; values are copied into a new dict.
Per-type plans are computed once and cached.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any, cast

from google.protobuf import descriptor, descriptor_pool, message, message_factory
from google.protobuf.descriptor import FieldDescriptor

from auditline.audit.v1 import options_pb2

__all__ = ["MASK", "Redactor", "hmac_value"]

log = logging.getLogger("auditline.interceptor")

MASK = "<redacted>"
HMAC_PREFIX = "hmac-sha256:"

REMOVE = options_pb2.REDACTION_MODE_REMOVE
MASKED = options_pb2.REDACTION_MODE_MASK
HMAC = options_pb2.REDACTION_MODE_HMAC_SHA256

_ANY = "google.protobuf.Any"
_STRUCT_TYPES = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
_WRAPPERS = {
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}


def _canonical_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, message.Message):
        return value.SerializeToString(deterministic=True)
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode()


class _Hmac:
    """HMAC-SHA256 under one key, with the padded key states hashed once (RFC 2104)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def __call__(self, value: object) -> str:
        inner = self._inner.copy()
        inner.update(_canonical_bytes(value))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return HMAC_PREFIX + outer.hexdigest()


def hmac_value(key: bytes, value: object) -> str:
    """`hmac-sha256:<hex>` of a value, as redaction mode HMAC_SHA256 writes it.

    Operators use it to search the audit log for a value they know (a token, a
    secret key) without the log ever holding the value itself. Strings hash as
    UTF-8, bytes as they are, messages in deterministic wire form.
    """
    return HMAC_PREFIX + hmac.digest(key, _canonical_bytes(value), "sha256").hex()


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldPlan:
    name: str
    mode: int  # 0: keep
    convert: Callable[[Any], Any]
    repeated: bool
    is_map: bool


# Names of fields that hold secrets, marked or not (`_field_mode`); cursors apart.
_SECRET_NAME = re.compile(r"secret|passw|token|credential|private_?key|api_?key", re.IGNORECASE)
_NOT_SECRET_NAME = re.compile(r"(^|_)page_token$")


def _field_mode(field: FieldDescriptor) -> int:
    """How a field is recorded: as its options say; a string or bytes field whose name
    says secret (password, token, api_key, ...) with no option at all is masked, and
    said once in the log: an embedder's proto without auditline's options had its
    passwords and tokens recorded in clear (found by a review helper). An explicit
    `(auditline.audit.v1.redact) = REDACTION_MODE_UNSPECIFIED` keeps such a field."""
    options = field.GetOptions()
    mode = options.Extensions[options_pb2.redact]
    if mode:
        return int(mode)
    if options.debug_redact:
        return REMOVE
    if (
        field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)
        and _SECRET_NAME.search(field.name)
        and not _NOT_SECRET_NAME.search(field.name)
        and not options.HasExtension(options_pb2.redact)
    ):
        log.warning(
            "field %s looks secret and is not marked for redaction: recorded masked; "
            "mark it (debug_redact, auditline.audit.v1.redact), or keep it with "
            "(auditline.audit.v1.redact) = REDACTION_MODE_UNSPECIFIED",
            field.full_name,
        )
        return MASKED
    return 0


def timestamp_text(seconds: int, nanos: int) -> str:
    """RFC 3339 as protobuf's JSON mapping writes it (0, 3, 6 or 9 fraction digits)."""
    if not 0 <= seconds <= 253402300799:  # outside 0001..9999 only the slow path copes
        from google.protobuf import timestamp_pb2

        return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos).ToJsonString()
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if nanos:
        digits = f"{nanos:09d}"
        if nanos % 1_000_000 == 0:
            digits = digits[:3]
        elif nanos % 1000 == 0:
            digits = digits[:6]
        text = f"{text}.{digits}"
    return text + "Z"


def _number(value: float) -> float | int | str:
    # JSON (and Struct) has no NaN or infinity; protobuf's JSON mapping spells them.
    # Whole numbers are written without a fraction, as protobuf writes a Struct's.
    if math.isfinite(value):
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


class Redactor:
    """Message → dict with redaction. Thread-safe after construction."""

    def __init__(
        self, hmac_key: bytes | None = None, pool: descriptor_pool.DescriptorPool | None = None
    ) -> None:
        self._hmac = _Hmac(hmac_key) if hmac_key is not None else None
        self._pool = pool or descriptor_pool.Default()
        self._plans: dict[str, tuple[_FieldPlan, ...]] = {}
        self._extensions: dict[str, _FieldPlan] = {}  # planned once each, as fields are

    def to_dict(self, msg: message.Message) -> dict[str, Any]:
        """The message's set fields, redacted, as JSON-ready Python values."""
        value = self._message(msg)
        if value is _DROP:  # an Any of a type it cannot see into: nothing of it
            return {}
        return value if isinstance(value, dict) else {"value": value}

    # --- values -------------------------------------------------------------

    def _redacted(self, mode: int, value: object) -> object:
        if mode == HMAC and self._hmac is not None:
            return self._hmac(value)
        # HMAC without a key cannot be computed; masking is the safe fallback.
        return MASK

    def _message(self, msg: message.Message) -> Any:
        full_name = msg.DESCRIPTOR.full_name
        if full_name in _STRUCT_TYPES:
            from google.protobuf import json_format

            return json_format.MessageToDict(msg)
        if full_name in _WRAPPERS:
            convert = self._scalar_of(cast(FieldDescriptor, msg.DESCRIPTOR.fields_by_name["value"]))
            return convert(msg.value)  # type: ignore[attr-defined]
        if full_name == _ANY:
            return self._any(msg)
        if full_name == "google.protobuf.Timestamp":
            return timestamp_text(msg.seconds, msg.nanos)  # type: ignore[attr-defined]
        if full_name in ("google.protobuf.Duration", "google.protobuf.FieldMask"):
            return msg.ToJsonString()  # type: ignore[attr-defined]
        plans = self._plans.get(full_name)
        if plans is None:
            plans = self._plan(cast(descriptor.Descriptor, msg.DESCRIPTOR))
        out: dict[str, Any] = {}
        for field, value in msg.ListFields():
            # An extension's index counts among its own scope's, not this message's
            # fields: planned by itself (rare: proto2 messages that carry extensions).
            plan = self._extension_plan(field) if field.is_extension else plans[field.index]
            if plan.mode:
                if plan.mode == REMOVE:
                    continue
                if plan.is_map:
                    out[plan.name] = {
                        str(k): self._redacted(plan.mode, v) for k, v in value.items()
                    }
                elif plan.repeated:
                    out[plan.name] = [self._redacted(plan.mode, v) for v in value]
                else:
                    out[plan.name] = self._redacted(plan.mode, value)
            elif plan.is_map:
                converted_map = {str(k): plan.convert(v) for k, v in value.items()}
                out[plan.name] = {k: v for k, v in converted_map.items() if v is not _DROP}
            elif plan.repeated:
                converted = [plan.convert(v) for v in value]
                out[plan.name] = [v for v in converted if v is not _DROP]
            else:
                converted = plan.convert(value)
                if converted is not _DROP:
                    out[plan.name] = converted
        return out

    def _any(self, msg: message.Message) -> Any:
        type_url: str = msg.type_url  # type: ignore[attr-defined]
        type_name = type_url.rpartition("/")[2]
        try:
            inner_descriptor = self._pool.FindMessageTypeByName(type_name)
        except KeyError:
            return _DROP  # an Any we cannot see into is left out, never logged raw
        inner = message_factory.GetMessageClass(inner_descriptor)()
        try:
            if not msg.Unpack(inner):  # type: ignore[attr-defined]
                return _DROP
        except message.DecodeError:
            return _DROP  # bytes that are not its type: left out too, not the whole body
        value = self._message(inner)
        if value is _DROP:  # an Any of an Any we cannot see into
            return _DROP
        if isinstance(value, dict):
            return {"@type": type_url, **value}
        return {"@type": type_url, "value": value}

    def _plan(self, message_descriptor: descriptor.Descriptor) -> tuple[_FieldPlan, ...]:
        result = tuple(self._field_plan(field) for field in message_descriptor.fields)
        self._plans[message_descriptor.full_name] = result
        return result

    def _extension_plan(self, field: FieldDescriptor) -> _FieldPlan:
        plan = self._extensions.get(field.full_name)
        if plan is None:
            plan = self._extensions[field.full_name] = self._field_plan(field)
        return plan

    def _field_plan(self, field: FieldDescriptor) -> _FieldPlan:
        entry = field.message_type
        is_map = entry is not None and entry.GetOptions().map_entry
        if entry is not None and is_map:
            convert = self._convert(entry.fields_by_name["value"])
        else:
            convert = self._convert(field)
        return _FieldPlan(
            # An extension is named as protobuf's JSON mapping names it.
            name=f"[{field.full_name}]" if field.is_extension else field.name,
            mode=_field_mode(field),
            convert=convert,
            repeated=field.is_repeated and not is_map,
            is_map=is_map,
        )

    def _convert(self, field: FieldDescriptor) -> Callable[[Any], Any]:
        # A proto2 group (or an editions DELIMITED field) is a message on the wire.
        if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            return self._message
        return self._scalar_of(field)

    @staticmethod
    def _scalar_of(field: FieldDescriptor) -> Callable[[Any], Any]:
        kind = field.type
        if kind == FieldDescriptor.TYPE_ENUM:
            enum = field.enum_type
            assert enum is not None

            def enum_name(number: int) -> Any:
                value = enum.values_by_number.get(number)
                return value.name if value is not None else number

            return enum_name
        if kind == FieldDescriptor.TYPE_BYTES:
            return lambda raw: base64.b64encode(raw).decode()
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return _number
        return _identity


def _identity(value: Any) -> Any:
    return value


class _Drop:
    """Marks a value that must not appear at all (an `Any` of unknown type)."""


_DROP: Any = _Drop()
