"""Typed errors of the auditline API: the gRPC code, the message, and the rich details."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = [
    "AlreadyExistsError",
    "AuditlineError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "from_rpc_error",
]


class AuditlineError(grpc.RpcError, Exception):
    """A call the server refused. Still a `grpc.RpcError`, for code that catches those."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        field_violations: list[tuple[str, str]],
        details: list[Any],
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self._code = code
        self.message = message
        self.field_violations = field_violations  # (field, description) from BadRequest
        self.rich_details = details  # every unpacked google.rpc detail message

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self.message


class InvalidArgumentError(AuditlineError):
    pass


class NotFoundError(AuditlineError):
    pass


class AlreadyExistsError(AuditlineError):
    pass


class PermissionDeniedError(AuditlineError):
    pass


class FailedPreconditionError(AuditlineError):
    pass


class ResourceExhaustedError(AuditlineError):
    pass


class UnauthenticatedError(AuditlineError):
    pass


class UnavailableError(AuditlineError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[AuditlineError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}

_DETAIL_TYPES = (
    error_details_pb2.BadRequest,
    error_details_pb2.ErrorInfo,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RetryInfo,
)


def from_rpc_error(error: grpc.RpcError, status: Any = None) -> AuditlineError:
    """The typed error of a failed call (its rich details unpacked)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else "") or ""
    if status is None:
        try:
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
        except (ValueError, AttributeError):
            status = None
    violations: list[tuple[str, str]] = []
    details: list[Any] = []
    for packed in status.details if status is not None else ():
        for kind in _DETAIL_TYPES:
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                details.append(detail)
                if isinstance(detail, error_details_pb2.BadRequest):
                    violations += [(v.field, v.description) for v in detail.field_violations]
    return _BY_CODE.get(code, AuditlineError)(code, message, violations, details)
