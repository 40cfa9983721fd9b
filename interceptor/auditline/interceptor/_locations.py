"""Where an exported log is read from: a local directory whose relative paths are the
object keys (what `aws s3 sync` of the bucket gives), or an S3 bucket and prefix."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from auditline.interceptor._s3 import parse_s3_url, s3_client

__all__ = ["LocalDirectory", "Location", "ObjectChange", "S3Location", "open_location"]


class Location(Protocol):
    """Objects by key, as an exporter wrote them."""

    def list_keys(self) -> Iterator[str]: ...

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""


@dataclasses.dataclass(frozen=True)
class LocalDirectory:
    root: Path

    def list_keys(self) -> Iterator[str]:
        for path in sorted(self.root.rglob("*")):
            if path.is_file():
                yield path.relative_to(self.root).as_posix()

    def read(self, key: str) -> bytes | None:
        # Keys come from the manifests, which anyone who can write the bucket may add:
        # none reads outside the directory (`../../etc/...`, an absolute path).
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            return None
        return path.read_bytes() if path.is_file() else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ObjectChange:
    """An object the log's writer would not have left so: deleted (a delete marker
    hides it; under object lock its versions are still there) or written again with
    other bytes; or, with no key, versions that could not be listed."""

    key: str
    kind: str  # "deleted-object", "overwritten-object" or "versions-unlisted"


@dataclasses.dataclass
class _Versions:
    """An S3 key's versions, oldest first, and whether a delete marker is its latest."""

    ids: list[str] = dataclasses.field(default_factory=list)
    etags: list[str] = dataclasses.field(default_factory=list)
    deleted: bool = False


class S3Location:
    """`s3://BUCKET[/PREFIX]?endpoint=URL&region=R`; credentials from the standard AWS
    variables and files.

    Keys are listed with their versions: a plain DELETE under object lock only adds a
    delete marker, which hid the tail of a log from a listing of current objects (and
    from `aws s3 sync`), while its locked versions stayed (found by a review helper).
    Such a key is read at its first version, and reported (`changes`), as is one with
    versions of other bytes. A listing of versions refused (no
    `s3:ListBucketVersions`) is reported too: what it hides cannot be seen."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = client
        self._first_version: dict[str, str] = {}
        self._changes: list[ObjectChange] = []

    @classmethod
    def from_url(cls, text: str) -> S3Location:
        """`s3://BUCKET[/PREFIX]?endpoint=URL&region=R`; `ValueError` when it is not."""
        url = parse_s3_url(text)
        return cls(url.bucket, url.prefix, s3_client(url))

    def list_keys(self) -> Iterator[str]:
        self._first_version, self._changes = {}, []
        try:
            versions = self._versions()
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _NO_VERSIONS:
                raise
            self._changes.append(ObjectChange(key="", kind="versions-unlisted"))
            yield from self._current_keys()
            return
        for key, found in sorted(versions.items()):
            if not found.ids:
                continue  # only delete markers: nothing of it is left to read
            changed = len(set(found.etags)) > 1 and self._differ(key, found)
            if found.deleted or changed:
                self._first_version[key] = found.ids[0]
            if found.deleted:
                self._changes.append(ObjectChange(key=key, kind="deleted-object"))
            if changed:
                self._changes.append(ObjectChange(key=key, kind="overwritten-object"))
            yield key

    def changes(self) -> list[ObjectChange]:
        """What the last `list_keys` found deleted or overwritten."""
        return list(self._changes)

    def _versions(self) -> dict[str, _Versions]:
        pages = self.client.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        keys: dict[str, _Versions] = {}
        for page in pages:
            # Each key's versions come newest first.
            for item in page.get("Versions", []):
                found = keys.setdefault(item["Key"][len(self.prefix) :], _Versions())
                found.ids.insert(0, item["VersionId"])
                found.etags.insert(0, item.get("ETag", ""))
            for marker in page.get("DeleteMarkers", []):
                if marker.get("IsLatest"):
                    keys.setdefault(marker["Key"][len(self.prefix) :], _Versions()).deleted = True
        return keys

    def _differ(self, key: str, found: _Versions) -> bool:
        """Whether versions of other ETags hold other bytes (an exporter puts the same
        bytes again, which some encryption gives another ETag each time)."""
        first = self._get(key, found.ids[0])
        return any(
            self._get(key, version) != first
            for version, etag in zip(found.ids[1:], found.etags[1:], strict=True)
            if etag != found.etags[0]
        )

    def _current_keys(self) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :]

    def read(self, key: str) -> bytes | None:
        return self._get(key, self._first_version.get(key))

    def _get(self, key: str, version: str | None) -> bytes | None:
        options = {"VersionId": version} if version else {}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, **options)
        except self.client.exceptions.NoSuchKey:
            return None
        return bytes(response["Body"].read())


# What a store answers when it lists no versions: not allowed, or not supported.
_NO_VERSIONS = {"AccessDenied", "NotImplemented", "MethodNotAllowed"}


def open_location(text: str) -> Location:
    """A location from its command-line form; `ValueError` when it is neither."""
    if text.startswith("s3://"):
        return S3Location.from_url(text)
    root = Path(text.removeprefix("file://"))
    if not root.is_dir():
        raise ValueError(f"{text} is not a directory (nor an s3:// URL)")
    return LocalDirectory(root)
