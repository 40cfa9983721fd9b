"""The spool's records as they cross modules: an event stored, an event on its way in,
a file an exporter stored, and a page of a query."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson
from google.protobuf import json_format

from auditline.audit.v1 import event_pb2
from auditline.interceptor._types import EventDocument

__all__ = [
    "BatchIntent",
    "DestinationLog",
    "EventPage",
    "ExportedFile",
    "QueuedDocuments",
    "SpoolStats",
    "SpooledEvent",
    "StoredEvent",
    "stored_event",
]

_LOG_TYPES = {v.name: v.number for v in event_pb2.LogType.DESCRIPTOR.values}
_SEQUENCE_PLACEHOLDER = b'"Sequence":"0"'


@dataclasses.dataclass(frozen=True, slots=True)
class SpooledEvent:
    """One event as the spool keeps it."""

    seq: int
    at_ns: int  # when the call arrived
    end_ns: int  # when it ended
    log_type: int
    body: bytes  # the event as protobuf's JSON mapping of ApiEvent, Sequence set

    def document(self) -> dict[str, Any]:
        return dict(orjson.loads(self.body))

    def event(self) -> event_pb2.ApiEvent:
        return json_format.ParseDict(self.document(), event_pb2.ApiEvent())


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    """An event on its way into the store: its JSON with `"Sequence":"0"`, and the
    columns the queries filter on."""

    body: bytes
    at_ns: int
    end_ns: int
    log_type: int
    event_id: str
    event_name: str
    account: str
    code: int

    def numbered(self, seq: int) -> bytes:
        """The body with its sequence number. The placeholder is found from the right:
        only escaped strings follow the `Sequence` key, so the last unescaped match
        is the key itself, whatever the request parameters hold."""
        at = self.body.rfind(_SEQUENCE_PLACEHOLDER)
        return b'%s"Sequence":"%d"%s' % (
            self.body[:at],
            seq,
            self.body[at + len(_SEQUENCE_PLACEHOLDER) :],
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ExportedFile:
    """One file an exporter stored: what `commit_files` records."""

    key: str
    first_seq: int
    last_seq: int
    events: int
    bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EventPage:
    """Events of a query, and whether more match after the last one."""

    events: list[SpooledEvent]
    more: bool


@dataclasses.dataclass
class SpoolStats:
    """The spool's figures, for metrics and health."""

    accepted: int = 0  # events taken
    dropped: int = 0  # events lost, each counted in a marker
    rejected: int = 0  # calls refused before they ran
    bytes: int = 0  # events some exporter still needs
    retained_bytes: int = 0  # exported events kept for queries
    buffered_bytes: int = 0  # events in memory, not yet written
    last_seq: int = 0
    write_errors: int = 0
    degraded: bool = False  # writes are failing, or the disk reserve is spent


def stored_event(node_id: str, item: EventDocument) -> StoredEvent:
    """An event as the spool stores it: numbered later, its node named, and the
    columns the queries filter on taken from the document."""
    document = item.document
    document["Sequence"] = "0"  # numbered when written (`StoredEvent.numbered`)
    if not document.get("NodeId"):
        document["NodeId"] = node_id
    request = document.get("Request", {})
    return StoredEvent(
        body=orjson.dumps(document),
        at_ns=item.at_ns,
        end_ns=item.end_ns,
        log_type=_LOG_TYPES.get(document.get("LogType", ""), 0),
        event_id=document.get("EventId", ""),
        event_name=document.get("EventName", ""),
        account=request.get("AccountName", ""),
        code=document.get("Response", {}).get("ResponseCode", 0),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchIntent:
    """A batch an exporter began and has not committed: it is redone as it was, so a
    retried upload lands under the same keys."""

    first_seq: int
    last_seq: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class DestinationLog:
    """Where a destination's log (this node's, whichever exporter wrote it) ends: its
    last event and the checkpoint signed there. Kept when its exporter is deleted, so
    that a later exporter at that destination goes on with that log rather than
    cutting its batches again, and one that comes back after writing elsewhere says
    where it resumes. `log_id` names that log in each of its manifests (random, made
    with its first batch), so that a manifest of another log of the node cannot pass
    for one of it; `manifest_key` is its last batch's manifest; `log_types` the log
    types whose events it holds (empty: every one; the others it leaves out)."""

    log_id: str
    manifest_key: str
    log_types: frozenset[int]
    last_seq: int
    size: int
    root: bytes


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueuedDocuments:
    """Documents handed to the spool without waiting (`Spool.queue_documents`)."""

    events: int  # how many were queued: not left out by the logs kept, nor dropped
    committed: Callable[[], bool]  # whether those are committed (true if none was)
