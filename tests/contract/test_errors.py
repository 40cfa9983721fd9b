"""The one error type: raised by a servicer, it reaches the client as the same class,
code, message and rich details, for each of the 16 error codes."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from auditline.errors import (
    BY_CODE,
    AuditlineError,
    InvalidArgumentError,
    NotFoundError,
    error_for,
    from_rpc_error,
)

_METHOD = "/test.Errors/Fail"


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
        code = grpc.StatusCode[request.decode()]
        info = error_details_pb2.ErrorInfo(reason="R_" + code.name, domain="test")
        context.abort_with_status(error_for(code, f"refused {code.name}", [info]).status())
        raise AssertionError("abort returns only by raising")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler: Any = grpc.unary_unary_rpc_method_handler(fail)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Errors", {"Fail": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    server.stop(None)


def test_every_error_code_has_its_class() -> None:
    assert set(BY_CODE) == set(grpc.StatusCode) - {grpc.StatusCode.OK}
    for code, cls in BY_CODE.items():
        assert cls("x").code() is code
        assert cls.__name__.removesuffix("Error").lower() == code.name.replace("_", "").lower()


@pytest.mark.parametrize("code", [code for code in grpc.StatusCode if code in BY_CODE], ids=str)
def test_an_error_crosses_the_wire_as_itself(channel: grpc.Channel, code: grpc.StatusCode) -> None:
    call: Any = channel.unary_unary(_METHOD)
    with pytest.raises(grpc.RpcError) as raised:
        call(code.name.encode(), timeout=10)
    error = from_rpc_error(raised.value)
    assert type(error) is BY_CODE[code]
    assert isinstance(error, AuditlineError)
    assert isinstance(error, grpc.RpcError)
    assert error.code() is code
    assert error.message == error.details() == f"refused {code.name}"
    (info,) = error.rich_details
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "R_" + code.name


def test_a_field_refusal_names_its_field() -> None:
    error = InvalidArgumentError.field("bucket_id", "must be lowercase")
    assert error.message == "bucket_id must be lowercase"
    assert error.field_violations == [("bucket_id", "must be lowercase")]
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_the_sent_message_is_bounded() -> None:
    status = NotFoundError("x" * 5000).status()
    assert len(status.details) < 1100
