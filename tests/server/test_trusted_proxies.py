"""Behind a trusted proxy the service decides about the client the audit log names:
failed logins block the forwarded client's address, never the proxy's (which would
lock every user out)."""

from __future__ import annotations

import functools
import uuid

import grpc
import pytest

from auditline.account.v1 import auth_pb2, auth_pb2_grpc
from tests.conftest import ServeFactory
from tests.support.exported import exported_events
from tests.support.serve import ServeProcess

ACCESS_KEY = "AKPROXIED"
SECRET_KEY = "proxied-secret-" + uuid.uuid4().hex
ATTACKER, USER = "203.0.113.7", "198.51.100.20"


def _behind_a_proxy(serve: ServeFactory) -> ServeProcess:
    """A server whose trusted proxy is the test's own connections."""
    return serve(
        "--trusted-proxies",
        "127.0.0.1/32",  # the test's own connections play the proxy
        "--login-block-seconds",
        "600",
        "--audit-unauthenticated-burst",
        "100000",
        env={"AUDITLINE_ADMIN_ACCESS_KEY": ACCESS_KEY, "AUDITLINE_ADMIN_SECRET_KEY": SECRET_KEY},
    )


def _login(
    auth: auth_pb2_grpc.AuthServiceStub, access_key: str, secret_key: str, client: str | None
) -> grpc.StatusCode:
    """A login forwarded for `client` (None: the proxy's own)."""
    metadata = (("x-forwarded-for", client),) if client else ()
    try:
        auth.Authenticate(
            auth_pb2.AuthenticateRequest(access_key=access_key, secret_key=secret_key),
            metadata=metadata,
            timeout=30,
        )
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_failed_logins_block_the_forwarded_client_not_the_proxy(serve: ServeFactory) -> None:
    process = _behind_a_proxy(serve)
    with grpc.insecure_channel(process.target) as channel:
        login = functools.partial(_login, auth_pb2_grpc.AuthServiceStub(channel))

        for attempt in range(100):
            assert login(f"AKUNKNOWN{attempt}", "x", ATTACKER) == grpc.StatusCode.UNAUTHENTICATED
        assert login(ACCESS_KEY, SECRET_KEY, ATTACKER) == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Everyone else behind the same proxy, and the proxy itself, still log in.
        assert login(ACCESS_KEY, SECRET_KEY, USER) == grpc.StatusCode.OK
        assert login(ACCESS_KEY, SECRET_KEY, None) == grpc.StatusCode.OK
    assert process.terminate() == 0
    blocks = [e for e in exported_events(process.data_dir) if e["EventName"] == "IpBlocked"]
    assert blocks
    assert {e["Request"]["SourceIP"] for e in blocks} == {ATTACKER}


@pytest.mark.parametrize("header", ["203.0.113.7", ""])
def test_an_untrusted_peer_cannot_choose_its_address(serve: ServeFactory, header: str) -> None:
    """Without --trusted-proxies the header is ignored: forging it does not dodge a block."""
    process = serve(
        "--login-block-seconds",
        "600",
        "--audit-unauthenticated-burst",
        "100000",
        env={"AUDITLINE_ADMIN_ACCESS_KEY": ACCESS_KEY, "AUDITLINE_ADMIN_SECRET_KEY": SECRET_KEY},
    )
    with grpc.insecure_channel(process.target) as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        for attempt in range(100):
            forged = (("x-forwarded-for", f"192.0.2.{attempt}"),)
            with pytest.raises(grpc.RpcError):
                auth.Authenticate(
                    auth_pb2.AuthenticateRequest(access_key=f"AKUNKNOWN{attempt}", secret_key="x"),
                    metadata=forged,
                    timeout=30,
                )
        metadata = (("x-forwarded-for", header),) if header else ()
        with pytest.raises(grpc.RpcError) as refused:
            auth.Authenticate(
                auth_pb2.AuthenticateRequest(access_key=ACCESS_KEY, secret_key=SECRET_KEY),
                metadata=metadata,
                timeout=30,
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_an_address_is_blocked_however_its_failures_are_spread(serve: ServeFactory) -> None:
    """Two ways around the blocks a review helper found. Stopping at each account's
    limit (10 failures, which blocked that account and deleted them) sprayed every
    account without the address's block (100) ever coming. And moving from address
    to address within an IPv6 /64, one caller's to choose from, guessed one account's
    secret without end. An address's failures count for it whatever accounts they
    name, and an IPv6 address counts as its /64."""
    process = _behind_a_proxy(serve)
    with grpc.insecure_channel(process.target) as channel:
        login = functools.partial(_login, auth_pb2_grpc.AuthServiceStub(channel))

        codes = {
            login(f"AKSPRAY{account}", "x", ATTACKER) for account in range(11) for _ in range(10)
        }
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes  # the address's, from its 100th
        assert login(ACCESS_KEY, SECRET_KEY, ATTACKER) == grpc.StatusCode.RESOURCE_EXHAUSTED

        for guess in range(10):
            wrong = login(ACCESS_KEY, "wrong", f"2001:db8:1:2::{guess + 1:x}")
            assert wrong == grpc.StatusCode.UNAUTHENTICATED
        assert (
            login(ACCESS_KEY, SECRET_KEY, "2001:db8:1:2::ff") == grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        # Another /64, and everyone else, still log in.
        assert login(ACCESS_KEY, SECRET_KEY, "2001:db8:1:3::1") == grpc.StatusCode.OK
        assert login(ACCESS_KEY, SECRET_KEY, USER) == grpc.StatusCode.OK
    assert process.terminate() == 0
