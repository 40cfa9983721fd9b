"""BucketService on both object stores: the buckets are real, named by S3's rules,
object-locked when immutable, and a standard account sees only its own."""

from __future__ import annotations

import datetime

import pytest

from auditline.account.v1 import bucket_pb2, permission_pb2
from auditline.account.v1 import service_account_pb2 as sa_pb
from auditline.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from auditline.server.objectstore import ObjectLockedError
from tests.support.account_server import Server, login_as, new_bucket, new_name, new_permission


def test_bucket_lifecycle_on_the_backend(server: Server) -> None:
    buckets = server.admin.buckets
    name = new_name("bkt")
    created = buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=name)).bucket
    assert created.name == f"buckets/{name}"
    assert not created.immutable
    server.store.put_object(name, "file.txt", b"12345")  # the bucket is real
    with pytest.raises(AlreadyExistsError):
        buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=name))
    with pytest.raises(FailedPreconditionError):  # not empty
        buckets.DeleteBucket(bucket_pb2.DeleteBucketRequest(name=created.name))
    server.store.delete_object(name, "file.txt")
    buckets.DeleteBucket(bucket_pb2.DeleteBucketRequest(name=created.name))
    with pytest.raises(NotFoundError):
        buckets.GetBucket(bucket_pb2.GetBucketRequest(name=created.name))


def test_bucket_names_follow_s3_rules(server: Server) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        server.admin.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id="Bad_Name"))
    assert error.value.field_violations[0][0] == "bucket_id"


def test_immutable_bucket_refuses_to_delete_locked_objects(server: Server) -> None:
    buckets = server.admin.buckets
    name = new_name("locked")
    bucket = buckets.CreateBucket(
        bucket_pb2.CreateBucketRequest(
            bucket_id=name,
            immutable=True,
            default_retention=bucket_pb2.Retention(
                mode=bucket_pb2.RETENTION_MODE_COMPLIANCE, days=1
            ),
        )
    ).bucket
    assert bucket.immutable
    assert bucket.default_retention.days == 1
    server.store.put_object(name, "audit.jsonl.gz", b"events")  # locked by the default
    with pytest.raises(ObjectLockedError):
        server.store.delete_object(name, "audit.jsonl.gz")
    assert server.store.get_object(name, "audit.jsonl.gz") == b"events"
    with pytest.raises(InvalidArgumentError) as bad:
        buckets.CreateBucket(
            bucket_pb2.CreateBucketRequest(
                bucket_id=new_name("x"),
                immutable=True,
                default_retention=bucket_pb2.Retention(
                    mode=bucket_pb2.RETENTION_MODE_COMPLIANCE, days=0
                ),
            )
        )
    assert bad.value.field_violations[0][0] == "default_retention.days"


def test_set_object_immutability_turns_lock_on(server: Server) -> None:
    name = new_bucket(server.admin)
    bucket = server.admin.buckets.SetObjectImmutability(
        bucket_pb2.SetObjectImmutabilityRequest(
            name=f"buckets/{name}",
            default_retention=bucket_pb2.Retention(
                mode=bucket_pb2.RETENTION_MODE_GOVERNANCE, days=2
            ),
        )
    ).bucket
    assert bucket.immutable
    assert bucket.default_retention.mode == bucket_pb2.RETENTION_MODE_GOVERNANCE
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    server.store.put_object(name, "k", b"v", retain_until=until, mode="COMPLIANCE")
    with pytest.raises(ObjectLockedError):
        server.store.delete_object(name, "k")


def test_the_audit_target_bucket_cannot_be_deleted(server: Server) -> None:
    buckets = server.admin.buckets
    # Created, object-locked, on first start and made the target of the account logs.
    target = buckets.GetBucket(
        bucket_pb2.GetBucketRequest(name="buckets/auditline-audit-logs")
    ).bucket
    assert target.immutable
    with pytest.raises(FailedPreconditionError) as error:
        buckets.DeleteBucket(bucket_pb2.DeleteBucketRequest(name=target.name))
    assert "audit log target" in error.value.details()


def test_standard_accounts_see_only_the_buckets_their_permissions_name(server: Server) -> None:
    mine, other = new_bucket(server.admin), new_bucket(server.admin)
    permission = new_permission(
        server.admin, bucket_scope=permission_pb2.BUCKET_SCOPE_NAMES, bucket_names=[mine]
    )
    user = login_as(server, sa_pb.ROLE_STANDARD, (permission.name,))
    listed = [b.name for b in user.buckets.ListBuckets(bucket_pb2.ListBucketsRequest()).buckets]
    assert listed == [f"buckets/{mine}"]
    got = user.buckets.GetBucket(bucket_pb2.GetBucketRequest(name=f"buckets/{mine}"))
    assert got.bucket.name == f"buckets/{mine}"
    # A bucket hidden from this account and one that does not exist get the same
    # answer, so that names cannot be probed.
    with pytest.raises(NotFoundError) as hidden:
        user.buckets.GetBucket(bucket_pb2.GetBucketRequest(name=f"buckets/{other}"))
    with pytest.raises(NotFoundError) as missing:
        user.buckets.GetBucket(bucket_pb2.GetBucketRequest(name="buckets/no-such-bucket-x"))
    assert hidden.value.details() == f"buckets/{other} does not exist"
    assert missing.value.details() == "buckets/no-such-bucket-x does not exist"
