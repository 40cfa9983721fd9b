"""The one error type of the auditline API, raised by servers and by clients alike.

A refusal is a gRPC status: a code, a message for a person, and rich details
(`google.rpc` messages such as `BadRequest`). A service raises one and the call guard
sends `error.status()`; a client turns a failed call back into the same type with
`from_rpc_error`. Every code but OK has its subclass, so `except NotFoundError` works
on both sides; the base class is still a `grpc.RpcError` for code that catches those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

# Messages travel in the `grpc-message` trailer; clients refuse trailers over 8-16 KB
# (RESOURCE_EXHAUSTED), and the audit log would then disagree with the client.
MAX_MESSAGE_CHARS = 1000

# The rich details a client unpacks (google.rpc's error_details.proto, every type).
_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.BadRequest,
    error_details_pb2.DebugInfo,
    error_details_pb2.ErrorInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.QuotaFailure,
    error_details_pb2.RequestInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RetryInfo,
)


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"


class AuditlineError(grpc.RpcError, Exception):
    """A call refused with a gRPC status code, a message and rich details."""

    CODE: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        details: Sequence[Message] = (),
        code: grpc.StatusCode | None = None,
    ) -> None:
        self._code = code if code is not None else self.CODE
        super().__init__(f"{self._code.name}: {message}")
        self.message = message
        self.rich_details: tuple[Message, ...] = tuple(details)

    @classmethod
    def field(cls, field: str, problem: str) -> Self:
        """A refusal of one request field, with a `BadRequest` naming it."""
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=_bounded(field), description=_bounded(problem)
        )
        return cls(
            f"{field} {problem}",
            details=[error_details_pb2.BadRequest(field_violations=[violation])],
        )

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        """The message (`grpc.RpcError`'s name for it)."""
        return self.message

    @property
    def field_violations(self) -> list[tuple[str, str]]:
        """(field, description) of every `BadRequest` among the details."""
        return [
            (violation.field, violation.description)
            for detail in self.rich_details
            if isinstance(detail, error_details_pb2.BadRequest)
            for violation in detail.field_violations
        ]

    def status(self) -> grpc.Status:
        """The status to send (`context.abort_with_status`); the message bounded."""
        packed = []
        for detail in self.rich_details:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
        return rpc_status.to_status(
            status_pb2.Status(
                code=getattr(code_pb2, self._code.name),
                message=_bounded(self.message),
                details=packed,
            )
        )


class CancelledError(AuditlineError):
    CODE = grpc.StatusCode.CANCELLED


class UnknownError(AuditlineError):
    CODE = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(AuditlineError):
    CODE = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(AuditlineError):
    CODE = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(AuditlineError):
    CODE = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(AuditlineError):
    CODE = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(AuditlineError):
    CODE = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(AuditlineError):
    CODE = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(AuditlineError):
    CODE = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(AuditlineError):
    CODE = grpc.StatusCode.ABORTED


class OutOfRangeError(AuditlineError):
    CODE = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(AuditlineError):
    CODE = grpc.StatusCode.UNIMPLEMENTED


class InternalError(AuditlineError):
    CODE = grpc.StatusCode.INTERNAL


class UnavailableError(AuditlineError):
    CODE = grpc.StatusCode.UNAVAILABLE


class DataLossError(AuditlineError):
    CODE = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(AuditlineError):
    CODE = grpc.StatusCode.UNAUTHENTICATED


# One class per code but OK: the one place that maps codes to types.
BY_CODE: dict[grpc.StatusCode, type[AuditlineError]] = {
    cls.CODE: cls
    for cls in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}


def error_for(
    code: grpc.StatusCode, message: str, details: Sequence[Message] = ()
) -> AuditlineError:
    """The error of `code` (its subclass), with `message` and `details`."""
    return BY_CODE.get(code, AuditlineError)(message, details=details, code=code)


def unpack_details(status: status_pb2.Status | None) -> list[Message]:
    """The known `google.rpc` detail messages of a status, unpacked."""
    unpacked: list[Message] = []
    for packed in status.details if status is not None else ():
        for kind in _DETAIL_TYPES:
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                unpacked.append(detail)
    return unpacked


def from_rpc_error(error: grpc.RpcError, status: Any = None) -> AuditlineError:
    """The typed error of a failed call, its rich details unpacked.

    `status` is the call's `google.rpc.Status` where the caller has it already (the
    asyncio client reads it from the trailers); else it is read from the error.
    """
    if isinstance(error, AuditlineError):
        return error
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    text = (error.details() if hasattr(error, "details") else "") or ""
    if status is None:
        try:
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
        except (ValueError, AttributeError):
            status = None
    return error_for(code, text, unpack_details(status))
