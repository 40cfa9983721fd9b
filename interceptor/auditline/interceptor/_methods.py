"""What the interceptor knows about a method: names, activity, message types."""

from __future__ import annotations

import dataclasses
import re

from google.protobuf import descriptor, descriptor_pool, message, message_factory

from auditline.audit.v1 import options_pb2
from auditline.interceptor._bounds import MAX_UNKNOWN_METHOD_CHARS, cut_marked

# Leading verbs of method names and the activity they imply, for services that
# carry no `(auditline.audit.v1.event)` option.
_VERBS: dict[str, int] = {
    **dict.fromkeys(
        ("Create", "Add", "Insert", "Register", "Upload", "Import", "Issue"),
        options_pb2.ACTIVITY_CREATE,
    ),
    **dict.fromkeys(
        (
            "Get",
            "List",
            "Read",
            "Describe",
            "Search",
            "Query",
            "Lookup",
            "Find",
            "Check",
            "Watch",
            "Validate",
            "Fetch",
            "Count",
            "Export",
            "Say",
        ),
        options_pb2.ACTIVITY_READ,
    ),
    **dict.fromkeys(
        (
            "Update",
            "Set",
            "Patch",
            "Put",
            "Modify",
            "Enable",
            "Disable",
            "Change",
            "Rename",
            "Replace",
            "Move",
            "Attach",
            "Detach",
            "Grant",
            "Revoke",
        ),
        options_pb2.ACTIVITY_UPDATE,
    ),
    **dict.fromkeys(
        ("Delete", "Remove", "Purge", "Destroy", "Drop", "Erase"), options_pb2.ACTIVITY_DELETE
    ),
}
_FIRST_WORD = re.compile(r"[A-Z][a-z0-9]*")


def activity_from_verb(method_name: str) -> int:
    """The activity a method name's leading verb implies (OTHER when none does)."""
    match = _FIRST_WORD.match(method_name)
    return (
        _VERBS.get(match.group(0), options_pb2.ACTIVITY_OTHER)
        if match
        else (options_pb2.ACTIVITY_OTHER)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class MethodInfo:
    """A gRPC method as the audit log names it."""

    full_method: str  # "/pkg.Service/Method"
    service: str
    method: str
    event_name: str
    activity: int
    request_class: type[message.Message] | None
    omit_response_body: bool = False
    # Whether a descriptor of the server describes it; if not, the caller chose the
    # name, which is then cut at MAX_UNKNOWN_METHOD_CHARS and kept in no cache.
    described: bool = False


def message_class_of(deserializer: object) -> type[message.Message] | None:
    """The message type behind `SomeMessage.FromString`, a method bound to its class."""
    owner = getattr(deserializer, "__self__", None)
    return owner if isinstance(owner, type) and issubclass(owner, message.Message) else None


def _split(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


# The methods the default descriptor pool describes, by their exact path: one entry per
# method the server's own code defines, however many names callers try.
_DESCRIBED: dict[str, MethodInfo] = {}


def method_info(full_method: str) -> MethodInfo:
    """Look the method up in the default descriptor pool; fall back on its name."""
    info = _DESCRIBED.get(full_method)
    if info is not None:
        return info
    service, method = _split(full_method)
    try:
        method_descriptor: descriptor.MethodDescriptor | None = (
            descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
        )
    except KeyError:
        method_descriptor = None
    # Only the exact path gRPC routes is the method's (not `//pkg.Service/Method`, say).
    if method_descriptor is None or full_method != (
        f"/{method_descriptor.containing_service.full_name}/{method_descriptor.name}"
    ):
        return _unknown(full_method, service, method)
    options = method_descriptor.GetOptions().Extensions[options_pb2.event]
    activity = options.activity or activity_from_verb(method)
    info = MethodInfo(
        full_method=full_method,
        service=service,
        method=method,
        event_name=options.name or method,
        activity=activity,
        request_class=message_factory.GetMessageClass(method_descriptor.input_type),
        omit_response_body=options.omit_response_body,
        described=True,
    )
    _DESCRIBED[full_method] = info
    return info


def _unknown(full_method: str, service: str, method: str) -> MethodInfo:
    """A method known only by the name the caller sent: every part of it cut."""
    limit = MAX_UNKNOWN_METHOD_CHARS
    method = cut_marked(method, limit)
    return MethodInfo(
        cut_marked(full_method, limit),
        cut_marked(service, limit),
        method,
        method,
        activity_from_verb(method),
        None,
    )
