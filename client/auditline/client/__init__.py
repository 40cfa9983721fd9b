"""The Python client of the auditline service (and the `auditline` CLI).

    from auditline.client import Client

    with Client("127.0.0.1:50051", access_key=..., secret_key=...) as client:
        client.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())

Errors are `auditline.client.errors.AuditlineError` subclasses, one per gRPC code.
"""

from auditline.client._client import AsyncClient, Client
from auditline.client._errors import AuditlineError

__all__ = ["AsyncClient", "AuditlineError", "Client"]
