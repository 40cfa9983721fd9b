"""Where an exported log is read from: a local directory whose relative paths are the
object keys (what `aws s3 sync` of the bucket gives), or an S3 bucket and prefix."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from auditline.interceptor._s3 import parse_s3_url, s3_client

__all__ = ["LocalDirectory", "Location", "S3Location", "open_location"]


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


class S3Location:
    """`s3://BUCKET[/PREFIX]?endpoint=URL&region=R`; credentials from the standard AWS
    variables and files."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = client

    @classmethod
    def from_url(cls, text: str) -> S3Location:
        """`s3://BUCKET[/PREFIX]?endpoint=URL&region=R`; `ValueError` when it is not."""
        url = parse_s3_url(text)
        return cls(url.bucket, url.prefix, s3_client(url))

    def list_keys(self) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :]

    def read(self, key: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except self.client.exceptions.NoSuchKey:
            return None
        return bytes(response["Body"].read())


def open_location(text: str) -> Location:
    """A location from its command-line form; `ValueError` when it is neither."""
    if text.startswith("s3://"):
        return S3Location.from_url(text)
    root = Path(text.removeprefix("file://"))
    if not root.is_dir():
        raise ValueError(f"{text} is not a directory (nor an s3:// URL)")
    return LocalDirectory(root)
