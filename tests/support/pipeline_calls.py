"""Calls and checks shared by the export pipeline's tests (tests/server/test_pipeline*.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from auditline.account.v1 import bucket_pb2
from auditline.client import Client
from tests.support.exported import DEFAULT_BUCKET, read_lines
from tests.support.outcome import code_of
from tests.support.seaweedfs import SeaweedFS
from tests.support.serve import ServeProcess

ADMIN_KEY = "AKPIPELINE"


ADMIN_SECRET = "pipeline-secret-" + uuid.uuid4().hex


ENV = {"AUDITLINE_ADMIN_ACCESS_KEY": ADMIN_KEY, "AUDITLINE_ADMIN_SECRET_KEY": ADMIN_SECRET}


def serve_on_seaweedfs(
    serve: Callable[..., ServeProcess], seaweedfs: SeaweedFS, prefix: str, *args: str
) -> tuple[ServeProcess, str]:
    """`auditline serve ARGS` with SeaweedFS as its object store and a new audit bucket
    named `prefix-…`; the process and the bucket."""
    bucket = f"{prefix}-{uuid.uuid4().hex[:10]}"
    env = ENV | seaweedfs.aws_env
    process = serve(*seaweedfs.shared_store_args, "--audit-bucket", bucket, *args, env=env)
    return process, bucket


def mixed_calls(api: Client, count: int) -> list[tuple[str, str]]:
    """`count` calls of several methods and outcomes; return (method, status) of each."""
    made = []
    for i in range(count):
        if i % 3 == 0:
            code = code_of(
                lambda: api.buckets.CreateBucket(
                    bucket_pb2.CreateBucketRequest(bucket_id=f"p-{uuid.uuid4().hex[:12]}"),
                    timeout=30,
                )
            )
            made.append(("CreateBucket", code.name))
        elif i % 3 == 1:
            code = code_of(
                lambda: api.buckets.GetBucket(
                    bucket_pb2.GetBucketRequest(name="buckets/no-such-bucket"), timeout=30
                )
            )
            made.append(("GetBucket", code.name))
        else:
            code = code_of(
                lambda: api.buckets.CreateBucket(
                    bucket_pb2.CreateBucketRequest(bucket_id="Not_Valid"), timeout=30
                )
            )
            made.append(("CreateBucket", code.name))
    return made


def s3_records(seaweed: SeaweedFS, bucket: str = DEFAULT_BUCKET) -> dict[str, list[dict[str, Any]]]:
    client = seaweed.client()
    records = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            if item["Key"].startswith("integrity/"):
                continue
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            records[item["Key"]] = read_lines(item["Key"], body)
    return records


def check_complete(events: list[dict[str, Any]]) -> None:
    sequences = [int(e["Sequence"]) for e in events]
    assert sequences == list(range(1, len(sequences) + 1)), "gaps or duplicates"
