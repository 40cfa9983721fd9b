"""One way to name and reach an S3 bucket: `s3://BUCKET[/PREFIX]?endpoint=URL&region=R`.

Writers and locations both take this form, so a log is verified from the URL it was
exported to. Credentials come from the standard AWS variables and files (boto3's own
chain); boto3 is the `[s3]` extra and is imported only when a bucket is opened.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import parse_qs, urlparse

__all__ = ["S3Url", "parse_s3_url", "s3_client"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class S3Url:
    bucket: str
    prefix: str = ""  # "" or ending in "/"
    endpoint: str | None = None
    region: str | None = None


def parse_s3_url(text: str) -> S3Url:
    """The parts of an `s3://` URL; `ValueError` when it is not one."""
    parsed = urlparse(text)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"an S3 location is s3://BUCKET[/PREFIX]?endpoint=..., not {text!r}")
    query = {name: values[-1] for name, values in parse_qs(parsed.query).items()}
    prefix = parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return S3Url(
        bucket=parsed.netloc,
        prefix=prefix,
        endpoint=query.get("endpoint") or None,
        region=query.get("region") or None,
    )


def s3_client(url: S3Url) -> Any:
    """A boto3 client for the URL's endpoint: path-style addressing (what S3-compatible
    stores such as SeaweedFS and MinIO serve) and boto3's standard retries."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=url.endpoint,
        region_name=url.region,
        config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}
        ),
    )
