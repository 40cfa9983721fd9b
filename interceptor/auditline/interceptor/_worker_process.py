"""The audit worker process's loop: read batches of captures, build their events, put
them in the pipeline's spool, acknowledge. `_worker` starts it and speaks to it."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from auditline.interceptor._builder import EventBuilder
from auditline.interceptor._capture_codec import decode_record, load_schemas, pack, unpack
from auditline.interceptor._record import AuditConfig, EventIds
from auditline.interceptor._types import AuditUnavailableError, EventDocument

if TYPE_CHECKING:
    from auditline.interceptor._pipeline import Pipeline
    from auditline.interceptor._spool import Spool

__all__ = ["worker_main"]


def _refusal(spool: Spool) -> str:
    """Why the spool refuses calls now ("" when it admits them)."""
    try:
        spool.admit()
    except AuditUnavailableError as exc:
        return str(exc) or "the audit log cannot record calls"
    return ""


def worker_main(
    conn: Connection,
    pipeline_factory: Callable[[], Pipeline],
    config: AuditConfig,
    schema_files: list[bytes],
) -> None:
    # Ctrl-C reaches the whole process group: the serving process decides when this
    # one stops (after the last events), not the signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        load_schemas(schema_files)
        pipeline = pipeline_factory()
    except Exception as exc:
        conn.send_bytes(pack(("failed", f"{type(exc).__name__}: {exc}")))
        return
    spool = pipeline.spool
    conn.send_bytes(pack(("ready", _refusal(spool))))
    worker = _Worker(spool, EventBuilder(config))
    try:
        while True:
            try:
                message = unpack(conn.recv_bytes())
            except EOFError:
                break  # the serving process is gone: keep what was handed over
            if message[0] == "quit":
                break
            _, batch_id, wait, resent, items = message
            error = worker.take(items, wait=wait, resent=resent)
            conn.send_bytes(pack(("ack", batch_id, error, _refusal(spool))))
    finally:
        pipeline.close()
    with contextlib.suppress(OSError):
        conn.send_bytes(pack(("quit",)))


class _Worker:
    def __init__(self, spool: Spool, builder: EventBuilder) -> None:
        self.spool = spool
        self.builder = builder
        self.ids = EventIds()

    def _known(self, event_id: str) -> bool:
        """Committed by the worker that died before acknowledging it."""
        return self.spool.store.queries.seq_of(event_id) is not None

    def take(self, items: list[tuple[Any, ...]], *, wait: bool, resent: bool) -> str:
        """Build and spool a batch's events; "" or why they could not be kept."""
        documents: list[EventDocument] = []
        flush = False
        for item in items:
            kind = item[0]
            if kind == "capture":
                record, event_id = decode_record(item[1])
                if resent and self._known(event_id):
                    continue
                documents += self.builder.documents(
                    record, event_id=event_id, next_id=self.ids.next
                )
            elif kind == "document":
                document = item[1]
                if resent and self._known(str(document.get("EventId", ""))):
                    continue
                documents.append(EventDocument(document=document, at_ns=item[2], end_ns=item[3]))
            elif kind == "schemas":
                load_schemas(item[1])
            elif kind == "flush":
                flush = True
        try:
            if documents:
                self.spool.emit_documents(documents, wait=wait)
        except AuditUnavailableError as exc:
            return str(exc) or "the audit log cannot record this call"
        if flush and not self.spool.flush(timeout=None):
            return "the spool could not commit in time"
        return ""
