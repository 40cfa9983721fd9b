"""The S3 backend of the object store: any S3-compatible endpoint, through boto3."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from auditline.server.objectstore import (
    BucketExistsError,
    BucketLock,
    BucketNotEmptyError,
    BucketUsage,
    NoSuchBucketError,
    ObjectLockedError,
    Retention,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["S3Store"]


class S3Store:
    """Any S3-compatible endpoint, through boto3."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        client: S3Client | None = None,
    ) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                config=Config(
                    s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}
                ),
            )
        self.client = client

    @staticmethod
    def _code(error: Exception) -> str:
        response = getattr(error, "response", None) or {}
        return str(response.get("Error", {}).get("Code", ""))

    def list_buckets(self) -> list[str]:
        return sorted(bucket["Name"] for bucket in self.client.list_buckets().get("Buckets", []))

    def bucket_lock(self, name: str) -> BucketLock:
        from botocore.exceptions import ClientError

        try:
            configuration = self.client.get_object_lock_configuration(Bucket=name)[
                "ObjectLockConfiguration"
            ]
        except ClientError as exc:
            code = self._code(exc)
            if code == "NoSuchBucket":
                raise NoSuchBucketError(name) from None
            if code == "ObjectLockConfigurationNotFoundError":
                return BucketLock(object_lock=False, retention=None)
            raise
        default = configuration.get("Rule", {}).get("DefaultRetention", {})
        days = default.get("Days") or 365 * default.get("Years", 0)
        return BucketLock(
            object_lock=configuration.get("ObjectLockEnabled") == "Enabled",
            retention=Retention(mode=default["Mode"], days=days)
            if days and "Mode" in default
            else None,
        )

    def create_bucket(
        self, name: str, *, object_lock: bool, retention: Retention | None = None
    ) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        except ClientError as exc:
            if self._code(exc) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise BucketExistsError(name) from None
            raise
        if object_lock and retention is not None:
            self._default_retention(name, retention)

    def _default_retention(self, name: str, retention: Retention | None) -> None:
        configuration: Any = {"ObjectLockEnabled": "Enabled"}
        if retention is not None:
            configuration["Rule"] = {
                "DefaultRetention": {"Mode": retention.mode, "Days": retention.days}
            }
        self.client.put_object_lock_configuration(
            Bucket=name, ObjectLockConfiguration=configuration
        )

    def delete_bucket(self, name: str) -> None:
        from botocore.exceptions import ClientError

        # Some S3 implementations (SeaweedFS by default) delete non-empty buckets;
        # S3's rule is checked here so that every backend keeps it.
        try:
            listing = self.client.list_object_versions(Bucket=name, MaxKeys=1)
            if listing.get("Versions"):
                raise BucketNotEmptyError(name)
            self.client.delete_bucket(Bucket=name)
        except ClientError as exc:
            code = self._code(exc)
            if code == "BucketNotEmpty":
                raise BucketNotEmptyError(name) from None
            if code == "NoSuchBucket":
                raise NoSuchBucketError(name) from None
            raise

    def enable_object_lock(self, name: str, retention: Retention | None) -> None:
        # Object lock needs versioning; S3 turns it on for an existing bucket this way.
        self.client.put_bucket_versioning(
            Bucket=name, VersioningConfiguration={"Status": "Enabled"}
        )
        self._default_retention(name, retention)

    def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        retain_until: datetime.datetime | None = None,
        mode: str | None = None,
    ) -> None:
        extra: dict[str, Any] = {}
        if retain_until is not None:
            extra = {
                "ObjectLockMode": mode or "COMPLIANCE",
                "ObjectLockRetainUntilDate": retain_until,
            }
        self.client.put_object(Bucket=bucket, Key=key, Body=data, **extra)

    def delete_object(self, bucket: str, key: str) -> None:
        from botocore.exceptions import ClientError

        versions = self.client.list_object_versions(Bucket=bucket, Prefix=key)
        targets = [v for v in versions.get("Versions", []) if v.get("Key") == key]
        try:
            if not targets:
                self.client.delete_object(Bucket=bucket, Key=key)
            for version in targets:
                self.client.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
        except ClientError as exc:
            if self._code(exc) == "AccessDenied":
                raise ObjectLockedError(f"{bucket}/{key} is locked") from None
            raise

    def get_object(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def has_object(self, bucket: str, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def usage(self, bucket: str) -> BucketUsage:
        size = count = 0
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket):
            for version in page.get("Versions", []):
                size += int(version.get("Size", 0))
                count += 1
        return BucketUsage(bytes=size, objects=count)
