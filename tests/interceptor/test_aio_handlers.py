"""The asyncio interceptor and what handlers do on a grpc.aio server: an abort with the
OK code answers as gRPC's sync server does (UNKNOWN)."""

from __future__ import annotations

import grpc
import pytest

from tests.interceptor.harness import FLAVOURS, Harness, R
from tests.support.outcome import error_of

# How long a client waits for an answer that should come at once: a call that never
# gets one fails on this deadline instead of hanging the test.
PROMPT = 5.0


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_abort_with_ok_answers_unknown_as_the_sync_server_does(
    flavour: str, audit_mode: str, fail_closed: bool
) -> None:
    # gRPC's sync server turns abort(OK) into UNKNOWN without a message; grpc.aio alone
    # never answers it. Every flavour answers, and logs, what the sync one does.
    h = Harness(flavour, mode=audit_mode, fail_closed=fail_closed)
    try:
        unary = error_of(lambda: h.stub.Echo(R(action="status", count=0), timeout=PROMPT))
        stream = error_of(
            lambda: list(h.stub.ChatThings(iter([R(action="status", count=0)]), timeout=PROMPT))
        )
        for error in (unary, stream):
            assert (error.code(), error.details()) == (grpc.StatusCode.UNKNOWN, "")
        for event in h.events(2):
            assert event.response.response_status == "UNKNOWN"
            assert event.response.response_error == ""
    finally:
        h.close()
