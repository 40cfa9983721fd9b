"""The Python client of the auditline service (and the `auditline` CLI).

    from auditline.client import Client

    with Client("127.0.0.1:50051", access_key=..., secret_key=...) as client:
        client.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())

Failed unary calls raise `auditline.errors.AuditlineError`, the subclass of their
gRPC code (the one error type server and client share).
"""

from auditline.client._client import AsyncClient, Client

__all__ = ["AsyncClient", "Client"]
