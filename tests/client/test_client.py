"""The Python client: sessions, re-authentication, typed errors, sync and asyncio."""

from __future__ import annotations

import asyncio
import uuid
from concurrent import futures

import grpc
import pytest

from auditline.account.v1 import auth_pb2, bucket_pb2, service_account_pb2
from auditline.audit.v1 import audit_log_pb2
from auditline.client import AsyncClient, Client
from auditline.errors import (
    AlreadyExistsError,
    AuditlineError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from tests.conftest import ServeFactory
from tests.support.processes import wait_for

KEY, SECRET = "AKCLIENT", "client-" + uuid.uuid4().hex
ENV = {"AUDITLINE_ADMIN_ACCESS_KEY": KEY, "AUDITLINE_ADMIN_SECRET_KEY": SECRET}


def test_the_client_authenticates_and_raises_typed_errors(serve: ServeFactory) -> None:
    process = serve(env=ENV)
    with Client(process.target, access_key=KEY, secret_key=SECRET) as client:
        name = f"c-{uuid.uuid4().hex[:10]}"
        bucket = client.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=name))
        assert bucket.bucket.name == f"buckets/{name}"
        with pytest.raises(AlreadyExistsError):
            client.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=name))
        with pytest.raises(NotFoundError) as missing:
            client.buckets.GetBucket(bucket_pb2.GetBucketRequest(name="buckets/nope"))
        assert "does not exist" in missing.value.message
        with pytest.raises(InvalidArgumentError) as invalid:
            client.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id="Bad_Name"))
        assert invalid.value.field_violations[0][0] == "bucket_id"
        assert isinstance(invalid.value, AuditlineError)
        created = client.accounts.CreateServiceAccount(
            service_account_pb2.CreateServiceAccountRequest(
                service_account=service_account_pb2.ServiceAccount(display_name="plain")
            )
        )
    with (
        Client(
            process.target,
            access_key=created.service_account.access_key,
            secret_key=created.secret_key,
        ) as plain,
        pytest.raises(PermissionDeniedError),
    ):
        plain.accounts.ListServiceAccounts(service_account_pb2.ListServiceAccountsRequest())
    with pytest.raises(UnauthenticatedError):
        Client(process.target, access_key=KEY, secret_key="wrong").token  # noqa: B018


def test_the_client_authenticates_again_when_the_token_expires(serve: ServeFactory) -> None:
    process = serve("--token-ttl", "1", env=ENV)
    with Client(process.target, access_key=KEY, secret_key=SECRET) as client:
        first = client.token
        client.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
        # A token closer than 30 s to its expiry is replaced before use: each call
        # here authenticates again, and the calls keep working.
        wait_for(lambda: True if client.token != first else None, timeout=10, what="a new token")
        client.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())


def test_a_given_token_is_used_as_it_is(serve: ServeFactory) -> None:
    process = serve(env=ENV)
    with Client(process.target, access_key=KEY, secret_key=SECRET) as admin:
        token = admin.token
    with Client(process.target, token=token) as client:
        assert client.buckets.ListBuckets(bucket_pb2.ListBucketsRequest()) is not None
    with Client(process.target, token="forged") as forged, pytest.raises(UnauthenticatedError):
        forged.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())


def test_the_asyncio_client(serve: ServeFactory) -> None:
    process = serve(env=ENV)

    async def run() -> None:
        async with AsyncClient(process.target, access_key=KEY, secret_key=SECRET) as client:
            name = f"a-{uuid.uuid4().hex[:10]}"
            await client.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=name))
            listed = await client.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
            assert f"buckets/{name}" in [b.name for b in listed.buckets]
            with pytest.raises(NotFoundError) as missing:
                await client.buckets.GetBucket(bucket_pb2.GetBucketRequest(name="buckets/x-y"))
            assert missing.value.message
            with pytest.raises(InvalidArgumentError) as invalid:
                await client.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id="B"))
            assert invalid.value.field_violations

    asyncio.run(run())


def test_an_anonymous_client_reaches_only_the_open_methods(serve: ServeFactory) -> None:
    process = serve(env=ENV)
    with Client(process.target) as anonymous:
        assert anonymous.target == process.target
        response = anonymous.auth.Authenticate(
            auth_pb2.AuthenticateRequest(access_key=KEY, secret_key=SECRET)
        )
        assert response.token
        with pytest.raises(UnauthenticatedError):
            anonymous.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
        # A stream's error is typed too, raised from its iteration.
        with pytest.raises(UnauthenticatedError):
            list(anonymous.events.TailEvents(audit_log_pb2.TailEventsRequest(), timeout=30))
    with pytest.raises(ValueError, match="together"):
        Client(process.target, access_key=KEY)


def _bucket_server(address: str) -> tuple[grpc.Server, int]:
    """A plain gRPC server answering `ListBuckets` with nothing, and its port."""

    def list_buckets(
        request: bucket_pb2.ListBucketsRequest, context: grpc.ServicerContext
    ) -> bucket_pb2.ListBucketsResponse:
        return bucket_pb2.ListBucketsResponse()

    handler = grpc.method_handlers_generic_handler(
        "auditline.account.v1.BucketService",
        {
            "ListBuckets": grpc.unary_unary_rpc_method_handler(
                list_buckets,
                request_deserializer=bucket_pb2.ListBucketsRequest.FromString,
                response_serializer=bucket_pb2.ListBucketsResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[handler])
    port = server.add_insecure_port(address)
    server.start()
    return server, port


def test_a_new_client_reaches_a_server_started_again_where_one_stopped() -> None:
    """A client in a process whose other client still reconnects to a server that
    stopped at the same address (a test's servers reuse ports) is not failed with that
    other's backoff: it has connections of its own."""
    first, port = _bucket_server("127.0.0.1:0")
    target = f"127.0.0.1:{port}"
    with Client(target, token="t") as earlier:
        earlier.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
        first.stop(None).wait()
        with pytest.raises(UnavailableError):  # its connection now waits to retry
            earlier.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
        second, _ = _bucket_server(target)
        try:
            with Client(target, token="t") as later:
                assert later.buckets.ListBuckets(bucket_pb2.ListBucketsRequest()) is not None
        finally:
            second.stop(None).wait()
