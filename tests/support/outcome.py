"""A call's outcome as a status code or an error, for tests that compare codes.

Works on raw stubs (which raise `grpc.RpcError`) and on `auditline.client.Client`
(whose `AuditlineError`s are `grpc.RpcError`s too). Where one code is expected, the
server's tests say `pytest.raises(NotFoundError)` instead.
"""

from __future__ import annotations

import threading
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


def at_once(*calls: Callable[[], object]) -> list[str]:
    """Run the calls at once (threads released together); each one's outcome, OK or
    its error's code name, in order."""
    together = threading.Barrier(len(calls))
    outcomes = [""] * len(calls)

    def run(index: int) -> None:
        together.wait(30)
        outcomes[index] = code_of(calls[index]).name

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes
