"""Where an exporter puts its files: a local directory, or an S3 bucket with object lock.

`open_writer` takes the same forms `auditline verify` reads (`open_location`): a
directory path, or `s3://BUCKET[/PREFIX]?endpoint=URL&region=R`.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path
from typing import Any

from auditline.interceptor._export_config import ObjectWriter
from auditline.interceptor._keys import TEMPORARY_PREFIX
from auditline.interceptor._s3 import S3Url, parse_s3_url, s3_client

__all__ = ["DirectoryWriter", "S3Writer", "open_writer"]


def _make_directories(path: Path) -> None:
    """`path` and its missing parents, each new one synced into its parent (else a
    power loss may take a new day's directory, and the file in it, with it)."""
    if path.is_dir():
        return
    _make_directories(path.parent)
    path.mkdir(exist_ok=True)
    _sync_directory(path.parent)


def _sync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class DirectoryWriter:
    """Files under a local directory, the key as the relative path.

    A directory cannot lock anything: retention is ignored, so this is for a local copy,
    tests, or a filesystem that enforces write-once itself. What it does keep is S3's
    rule for locked objects: a key, once written, is never replaced by other bytes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = f"file://{root.absolute()}"

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def put(
        self, key: str, data: bytes, *, retain_until: datetime.datetime | None, mode: str | None
    ) -> None:
        path = self.root / key
        if self.root.resolve() not in path.resolve().parents:
            raise ValueError(f"key {key!r} leaves the directory")
        _make_directories(path.parent)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY_PREFIX)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o444)
            try:
                # A hard link, unlike a rename, refuses to replace an existing file.
                os.link(temporary, path)
            except FileExistsError:
                # A retried upload of a batch that did arrive: the key names the batch,
                # so the same bytes mean it is done; other bytes are an error.
                if path.read_bytes() != data:
                    raise FileExistsError(f"{path} exists with other content") from None
        finally:
            os.unlink(temporary)
        # The new name must be on disk too before the exporter frees the file's events.
        _sync_directory(path.parent)


class S3Writer:
    """Objects in an S3 bucket (which must exist), locked until `retain_until` when the
    exporter asks for retention; the bucket should have object lock turned on."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        self.url = S3Url(bucket=bucket, prefix=prefix, endpoint=endpoint, region=region)
        self.client = client if client is not None else s3_client(self.url)
        self.location = f"s3://{bucket}/{prefix}?endpoint={endpoint or ''}"

    @classmethod
    def from_url(cls, text: str) -> S3Writer:
        """`s3://BUCKET[/PREFIX]?endpoint=URL&region=R`; `ValueError` for anything else."""
        url = parse_s3_url(text)
        return cls(url.bucket, prefix=url.prefix, endpoint=url.endpoint, region=url.region)

    def exists(self, key: str) -> bool:
        # Listed, not read: a writer's role may list (`check` does) and not read.
        full = self.url.prefix + key
        listed = self.client.list_objects_v2(Bucket=self.url.bucket, Prefix=full, MaxKeys=1)
        return any(item.get("Key") == full for item in listed.get("Contents", []))

    def check(self) -> S3Writer:
        """Fail now, clearly, when the bucket is missing or unreadable (S3 names the
        reason, e.g. NoSuchBucket or AccessDenied; a HEAD would say only 404 or 403)."""
        self.client.list_objects_v2(Bucket=self.url.bucket, Prefix=self.url.prefix, MaxKeys=1)
        return self

    def put(
        self, key: str, data: bytes, *, retain_until: datetime.datetime | None, mode: str | None
    ) -> None:
        lock: dict[str, Any] = {}
        if retain_until is not None:
            lock = {
                "ObjectLockMode": mode or "COMPLIANCE",
                "ObjectLockRetainUntilDate": retain_until,
            }
        # A retried put of the same key adds a version with the same bytes in a
        # versioned (object-locked) bucket: the verifier reads the latest, equal to it.
        self.client.put_object(Bucket=self.url.bucket, Key=self.url.prefix + key, Body=data, **lock)


def open_writer(text: str) -> ObjectWriter:
    """A writer from its command-line form: `s3://…`, or a directory (created if needed)."""
    if text.startswith("s3://"):
        return S3Writer.from_url(text).check()
    root = Path(text.removeprefix("file://"))
    root.mkdir(parents=True, exist_ok=True)
    return DirectoryWriter(root)
