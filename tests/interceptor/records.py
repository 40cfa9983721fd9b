"""The interceptor's core without a server, for tests that feed it records: a core
over a sink, and the `CallRecord` of a finished unary Echo call."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import grpc
from google.protobuf import message

from auditline.interceptor._core import AuditCore
from auditline.interceptor._methods import method_info
from auditline.interceptor._record import CallRecord, make_config
from auditline.interceptor._types import Sink


def audit_core(sink: Sink, *, hmac_key: bytes | None = None) -> AuditCore:
    return AuditCore(
        sink,
        make_config(
            node_id="n",
            principal=None,
            trusted_proxies=(),
            hmac_key=hmac_key,
            metadata_allowlist=(),
            max_body_bytes=1_000_000,
            fail_closed=False,
        ),
    )


def echo_record(request: message.Message, response: message.Message, **changes: Any) -> CallRecord:
    """A unary Echo call answered OK with `response`; `changes` replace fields."""
    now = time.time_ns()
    record = CallRecord(
        info=method_info("/auditline_testing.v1.EchoService/Echo"),
        started_ns=now,
        ended_ns=now + 1000,
        peer="ipv4:127.0.0.1:1",
        metadata=(("user-agent", "ua"),),
        request=request.SerializeToString(),
        request_class=type(request),
        request_count=1,
        response=response,
        response_count=1,
        code=grpc.StatusCode.OK,
        details="",
        error=None,
        ended_by_client=False,
        deadline_ns=None,
        trailing_metadata=(),
        principal=None,
        trace_id="",
        span_id="",
    )
    return dataclasses.replace(record, **changes) if changes else record
