"""Settling the status a client saw, and summarizing rich error details line by line."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import message

from auditline.interceptor._types import Metadata

__all__ = [
    "CODES_BY_NUMBER",
    "MAX_SENT_DETAILS_BYTES",
    "as_status_code",
    "cut_text",
    "error_detail_lines",
    "final_status",
    "fit_for_clients",
    "sendable",
    "sendable_trailers",
    "summarize_status_details",
    "uncaught_details",
]

STATUS_DETAILS_KEY = "grpc-status-details-bin"
# Status messages travel percent-encoded in the `grpc-message` trailer, and clients
# refuse trailers past 8-16 KB (then they see RESOURCE_EXHAUSTED or INTERNAL, not the
# code the handler chose, nor what the audit log says). Longer messages are cut.
MAX_SENT_DETAILS_BYTES = 2048
CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def as_status_code(code: Any) -> grpc.StatusCode | None:
    """gRPC's sync context gives `StatusCode`s, the asyncio one may give numbers."""
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    return CODES_BY_NUMBER.get(int(code), grpc.StatusCode.UNKNOWN)


def cut_text(text: str, max_bytes: int) -> tuple[str, bool]:
    """`text` cut to at most `max_bytes` of UTF-8 (whole characters), and whether it was."""
    if len(text) <= max_bytes // 4:
        return text, False
    raw = text.encode("utf-8", "replace")
    if len(raw) <= max_bytes:
        return text, False
    return raw[:max_bytes].decode("utf-8", "ignore"), True


def uncaught_details(error: BaseException | type[BaseException]) -> str:
    """The status message of an uncaught exception: its type only, never its message
    (it may hold secrets) nor the stack, for the client and the log alike."""
    kind = error if isinstance(error, type) else type(error)
    return f"Exception calling application: {kind.__name__}"


# What a byte of the status message costs on the wire: gRPC percent-encodes every
# byte outside printable ASCII, and "%" (RFC 3986 style, as `grpc-message` wants).
_WIRE_COST = bytes(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in range(256))
_SENT_AS_IS = bytes(b for b in range(256) if _WIRE_COST[b] == 1)


def _wire_bytes(text: str | bytes | None) -> int:
    """The status message's size in its `grpc-message` trailer."""
    raw = as_text(text).encode("utf-8", "replace")
    escaped = len(raw.translate(None, _SENT_AS_IS))
    return len(raw) + 2 * escaped


def sendable(details: str | bytes | None) -> str | None:
    """The status message cut to what a client will accept (measured as it travels,
    percent-encoded: a non-ASCII message took three times its size), or None when it
    fits."""
    if details is None or len(details) <= MAX_SENT_DETAILS_BYTES // 12:
        return None
    text = as_text(details)
    if _wire_bytes(text) <= MAX_SENT_DETAILS_BYTES:
        return None
    raw, size, end = text.encode("utf-8", "replace"), 0, 0
    for end, byte in enumerate(raw):  # noqa: B007 - `end` is where the cut goes
        size += _WIRE_COST[byte]
        if size > MAX_SENT_DETAILS_BYTES:
            break
    return raw[:end].decode("utf-8", "ignore")


# Clients refuse trailing metadata past 8 KB at random, and always past 16 KB (gRPC
# counts each entry's key and value as they travel, and 32 bytes): then they see
# RESOURCE_EXHAUSTED, not the code the handler chose, nor what the audit log says.
MAX_SENT_TRAILERS_BYTES = 7 * 1024


def _entry_bytes(key: str, value: str | bytes) -> int:
    """A metadata entry's size on the wire: a binary value goes base64-encoded."""
    size = len(value.encode("utf-8", "replace") if isinstance(value, str) else value)
    if key.endswith("-bin"):
        size = (size + 2) // 3 * 4
    return len(key) + size + 32


def sendable_trailers(trailing_metadata: Metadata | None, details: str | bytes | None) -> Any:
    """The trailing metadata as clients will take it with the status message: without
    its rich error details, else (the handler's own entries too large) without any;
    None when it fits as it is. The code and the message still go out, and the log
    says what the client saw."""
    if not trailing_metadata:
        return None
    message = _wire_bytes(details) + 32
    if message + sum(_entry_bytes(k, v) for k, v in trailing_metadata) <= MAX_SENT_TRAILERS_BYTES:
        return None
    kept = tuple((key, value) for key, value in trailing_metadata if key != STATUS_DETAILS_KEY)
    if message + sum(_entry_bytes(k, v) for k, v in kept) <= MAX_SENT_TRAILERS_BYTES:
        return kept
    return ()


def fit_for_clients(context: Any) -> None:
    """Cut what a call's context will send to what clients take (`sendable`,
    `sendable_trailers`): the status each flavour sets before its answer goes out."""
    shortened = sendable(context.details())
    if shortened is not None:
        context.set_details(shortened)
    trailers = sendable_trailers(context.trailing_metadata(), context.details())
    if trailers is not None:
        context.set_trailing_metadata(trailers)


def as_text(details: str | bytes | None) -> str:
    if details is None:
        return ""
    if isinstance(details, bytes):
        return details.decode("utf-8", "replace")
    return details


def final_status(
    code: grpc.StatusCode | None,
    details: str | bytes | None,
    error: type[BaseException] | None,
    *,
    ended_by_client: bool,
    deadline_passed: bool,
) -> tuple[grpc.StatusCode, str]:
    """The status the client saw, from what the handler did and how the call ended.

    A call whose deadline passed before its status went out ended DEADLINE_EXCEEDED
    for the client, and one the client cancelled ended CANCELLED, whatever the
    handler answered (kept in the message: "the handler had answered OK" when it
    finished, so that what it did is not taken for undone; found by a review
    helper: a rule for successful calls was evaded by a deadline that passed as the
    handler answered).
    """
    if deadline_passed or ended_by_client:
        settled = (
            (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            if deadline_passed
            else (grpc.StatusCode.CANCELLED, "Cancelled by the client")
        )
        if code in (None, grpc.StatusCode.OK):
            if error is not None:
                return settled  # cut short: the handler gave no answer
            return settled[0], f"{settled[1]}; the handler had answered OK"
        return settled[0], f"{settled[1]}; the handler had answered {code.name}: {as_text(details)}"
    if error is not None and code in (None, grpc.StatusCode.OK):
        return grpc.StatusCode.UNKNOWN, uncaught_details(error)
    return code or grpc.StatusCode.OK, as_text(details)


def error_detail_lines(trailing_metadata: Metadata | None) -> list[str]:
    """The `grpc-status-details-bin` trailer, summarized line by line."""
    return [
        line
        for key, value in trailing_metadata or ()
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes)
        for line in summarize_status_details(value)
    ]


def summarize_status_details(raw: bytes) -> list[str]:
    """One line per rich error detail of a `grpc-status-details-bin` value."""
    from google.rpc import error_details_pb2, status_pb2

    try:
        status = status_pb2.Status.FromString(raw)
    except message.DecodeError:
        return ["(unparseable grpc-status-details-bin)"]
    lines = []
    for detail in status.details:
        type_name = detail.type_url.rpartition("/")[2]
        short = type_name.rpartition(".")[2]
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = "; ".join(f"{v.field}: {v.description}" for v in bad.field_violations)
            lines.append(f"{short}: {violations}")
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            lines.append(f"{short}: {info.reason} ({info.domain})")
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            text = "; ".join(f"{v.type} {v.subject}: {v.description}" for v in failure.violations)
            lines.append(f"{short}: {text}")
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            resource = error_details_pb2.ResourceInfo()
            detail.Unpack(resource)
            lines.append(f"{short}: {resource.resource_type} {resource.resource_name}")
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            lines.append(f"{short}: retry after {retry.retry_delay.ToJsonString()}")
        else:
            lines.append(short)  # the type only: unknown details may hold anything
    return lines
