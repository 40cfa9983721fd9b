"""The events the server writes of itself, not for a call (the audit policy a start
applies, a detection finding): one shape, made in one place."""

from __future__ import annotations

import time
import uuid
from typing import Any

from auditline.audit.v1 import event_pb2, options_pb2

__all__ = ["product_event"]


def product_event(
    name: str,
    *,
    service: str,
    activity: options_pb2.Activity.ValueType,
    log_type: event_pb2.LogType.ValueType,
    node_id: str,
    account_name: str,
    params: dict[str, Any],
) -> event_pb2.ApiEvent:
    """An event named `name`, now, answered OK, with `params` as its request."""
    now = time.time_ns()
    event = event_pb2.ApiEvent(
        event_name=name,
        version="2",
        event_id=str(uuid.uuid4()),
        node_id=node_id,
        service=service,
        method=name,
        activity=activity,
        log_type=log_type,
    )
    event.request.account_name = account_name
    event.request.request_time.FromNanoseconds(now)
    event.request.request_params.update(params)
    event.response.response_time.FromNanoseconds(now)
    event.response.response_status = "OK"
    event.response.response_body.SetInParent()
    return event
