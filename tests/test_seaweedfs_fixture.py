"""The SeaweedFS fixture later issues rely on: a real S3 gateway with object lock."""

from __future__ import annotations

import datetime
import socket
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.support.seaweedfs import SeaweedFS

pytestmark = pytest.mark.seaweedfs


def test_object_locked_bucket_refuses_to_delete_a_locked_object(seaweedfs: SeaweedFS) -> None:
    s3 = seaweedfs.client()
    bucket = f"locked-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    assert (
        s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"][
            "ObjectLockEnabled"
        ]
        == "Enabled"
    )

    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    put = s3.put_object(
        Bucket=bucket,
        Key="audit/1.jsonl.gz",
        Body=b"event",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )
    version = put["VersionId"]
    retention = s3.get_object_retention(Bucket=bucket, Key="audit/1.jsonl.gz")["Retention"]
    assert retention["Mode"] == "COMPLIANCE"

    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key="audit/1.jsonl.gz", VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # Still there, byte for byte.
    body = s3.get_object(Bucket=bucket, Key="audit/1.jsonl.gz", VersionId=version)["Body"]
    assert body.read() == b"event"


def test_unlocked_object_can_be_deleted(seaweedfs: SeaweedFS) -> None:
    """The contrast that shows the refusal above comes from the lock."""
    s3 = seaweedfs.client()
    bucket = f"plain-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    s3.delete_object(Bucket=bucket, Key="k")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_wrong_credentials_are_refused(seaweedfs: SeaweedFS) -> None:
    s3 = seaweedfs.client(aws_secret_access_key="not-the-secret")
    with pytest.raises(ClientError):
        s3.list_buckets()


def test_a_port_taken_before_the_first_start_moves_weed_to_fresh_ports(tmp_path: Path) -> None:
    """The ports are chosen before weed binds them; if another test binds one first,
    the fixture starts again elsewhere instead of failing the test that wanted S3."""
    weed = SeaweedFS(tmp_path)
    taken = weed.ports["volume.port.grpc"]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            weed.start()
            assert taken not in weed.ports.values()
            weed.client().list_buckets()
        finally:
            weed.stop()
