"""Errors a caller can act on, each with its gRPC code; kept apart from bugs.

Services raise `ApiError` subclasses; the call guard (`auditline.server.guard`)
turns them into a status with rich details (`google.rpc.BadRequest` field
violations for bad input). Anything else that escapes a handler is a bug and
ends as UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "MAX_MESSAGE_CHARS",
    "AlreadyExistsError",
    "ApiError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "shown",
]

# Messages travel in the `grpc-message` trailer; clients refuse trailers over 8-16 KB
# (RESOURCE_EXHAUSTED), and the audit log would then disagree with the client.
MAX_MESSAGE_CHARS = 1000
_SHOWN_CHARS = 100


def shown(value: str) -> str:
    """A caller's value as an error message echoes it: at most 100 characters."""
    return value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"


class ApiError(Exception):
    """A refusal with a gRPC code and a message for a person."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, violations: Sequence[tuple[str, str]] = ()) -> None:
        message = _bounded(message)
        super().__init__(message)
        self.message = message
        self.violations = tuple((_bounded(field), _bounded(text)) for field, text in violations)

    def status(self) -> grpc.Status:
        details = []
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=text)
                    for field, text in self.violations
                ]
            )
            detail = any_pb2.Any()
            detail.Pack(bad_request)
            details.append(detail)
        return rpc_status.to_status(
            status_pb2.Status(
                code=getattr(code_pb2, self.code.name), message=self.message, details=details
            )
        )


class InvalidArgumentError(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    @classmethod
    def field(cls, field: str, problem: str) -> InvalidArgumentError:
        return cls(f"{field} {problem}", violations=[(field, problem)])


class NotFoundError(ApiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(ApiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDeniedError(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED


class UnauthenticatedError(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhaustedError(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
