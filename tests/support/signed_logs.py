"""Signed logs built for the verifier's tests: events spooled in batches, each batch
exported by every exporter given."""

from __future__ import annotations

import time
from collections.abc import Sequence

from auditline.audit.v1 import event_pb2
from auditline.interceptor import Exporter, Spool


def export_batches(
    spool: Spool,
    exporters: Sequence[Exporter],
    batches: Sequence[Sequence[int]],
    *,
    idle: bool = False,
) -> None:
    """One event per log type listed (`LogType` numbers), batch by batch, the events
    numbered from e-0 on; each exporter exports every batch (and signs an idle
    checkpoint after it, with `idle`). The spool is closed after."""
    now = time.time_ns()
    number = 0
    for batch in batches:
        for log_type in batch:
            event = event_pb2.ApiEvent(
                event_name=f"Call{number}", event_id=f"e-{number}", version="2"
            )
            event.log_type = log_type  # type: ignore[assignment]
            event.request.request_time.FromNanoseconds(now)
            event.response.response_time.FromNanoseconds(now)
            spool.emit(event)
            number += 1
        assert spool.flush(10)
        for exporter in exporters:
            while exporter.export_once():
                pass
            if idle:
                exporter.checkpoint_idle()
    spool.close()
