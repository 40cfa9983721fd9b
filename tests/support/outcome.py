"""A call's outcome as a status code or an error, for tests that compare codes.

Works on raw stubs (which raise `grpc.RpcError`) and on `auditline.client.Client`
(whose `AuditlineError`s are `grpc.RpcError`s too). Where one code is expected, the
server's tests say `pytest.raises(NotFoundError)` instead.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc


def error_of(call: Callable[[], object]) -> grpc.RpcError:
    """The RpcError a call raises (AssertionError when it succeeds)."""
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded")


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    """The code a call ends with: OK, or its error's."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK
