"""`auditline bucket …`: the object store's buckets and their object lock."""

from __future__ import annotations

import argparse

from auditline.account.v1 import bucket_pb2
from auditline.client._client import Client
from auditline.client._command_parsers import SubParsers, add_command, add_group, resource_name
from auditline.client._output import print_deleted, print_message

__all__ = ["add_bucket_commands"]

_COLUMNS = ("name", "immutable", "default_retention.days", "audit_logging_enabled")
_RETENTION_MODES = {
    "governance": bucket_pb2.RETENTION_MODE_GOVERNANCE,
    "compliance": bucket_pb2.RETENTION_MODE_COMPLIANCE,
}


def _retention(args: argparse.Namespace) -> bucket_pb2.Retention | None:
    # No days, no default retention: the mode alone means nothing.
    if not args.retention_days:
        return None
    return bucket_pb2.Retention(
        mode=_RETENTION_MODES[args.retention_mode], days=args.retention_days
    )


def _create(client: Client, args: argparse.Namespace) -> None:
    request = bucket_pb2.CreateBucketRequest(bucket_id=args.name, immutable=args.immutable)
    retention = _retention(args)
    if retention is not None:
        request.default_retention.CopyFrom(retention)
    print_message(client.buckets.CreateBucket(request).bucket, as_json=args.json, columns=_COLUMNS)


def _list(client: Client, args: argparse.Namespace) -> None:
    response = client.buckets.ListBuckets(bucket_pb2.ListBucketsRequest(page_size=1000))
    print_message(response, as_json=args.json, rows=response.buckets, columns=_COLUMNS)


def _get(client: Client, args: argparse.Namespace) -> None:
    response = client.buckets.GetBucket(
        bucket_pb2.GetBucketRequest(name=resource_name("buckets", args.name))
    )
    print_message(response.bucket, as_json=args.json, columns=_COLUMNS)


def _delete(client: Client, args: argparse.Namespace) -> None:
    client.buckets.DeleteBucket(
        bucket_pb2.DeleteBucketRequest(name=resource_name("buckets", args.name))
    )
    print_deleted(resource_name("buckets", args.name), as_json=args.json)


def _lock(client: Client, args: argparse.Namespace) -> None:
    request = bucket_pb2.SetObjectImmutabilityRequest(name=resource_name("buckets", args.name))
    retention = _retention(args)
    if retention is not None:
        request.default_retention.CopyFrom(retention)
    response = client.buckets.SetObjectImmutability(request)
    print_message(response.bucket, as_json=args.json, columns=_COLUMNS)


def _add_retention_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retention-mode", choices=tuple(_RETENTION_MODES), default="compliance")
    parser.add_argument("--retention-days", type=int, default=0)


def add_bucket_commands(subparsers: SubParsers) -> None:
    """`auditline bucket create|list|get|delete|lock`."""
    bucket = add_group(subparsers, "bucket", "buckets of the object store")
    parser = add_command(bucket, "create", _create, "create a bucket")
    parser.add_argument("name")
    parser.add_argument("--immutable", action="store_true", help="with object lock")
    _add_retention_options(parser)
    add_command(bucket, "list", _list, "list buckets")
    add_command(bucket, "get", _get, "show a bucket").add_argument("name")
    add_command(bucket, "delete", _delete, "delete an empty bucket").add_argument("name")
    parser = add_command(bucket, "lock", _lock, "turn object lock on (for good)")
    parser.add_argument("name")
    _add_retention_options(parser)
