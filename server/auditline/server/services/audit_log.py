"""AuditLogService: the events kept on this node, listed and tailed; the exported log
queried (`log_queries`); the event catalog and the verifier keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from auditline.audit.v1 import audit_log_pb2 as pb
from auditline.audit.v1 import audit_log_pb2_grpc
from auditline.errors import NotFoundError, ResourceExhaustedError
from auditline.interceptor import SpoolView
from auditline.server.call_slots import CallSlots
from auditline.server.catalog import catalog_response
from auditline.server.guard import recheck_caller
from auditline.server.log_queries import ExportedLogQueries
from auditline.server.services._common import (
    MAX_PAGE_SIZE,
    decode_page_token,
    encode_page_token,
    page_limit,
    time_ns,
)


def _filters(request_filter: pb.EventFilter) -> dict[str, Any]:
    return {
        "event_names": list(request_filter.event_names),
        "account": request_filter.account_name,
        "codes": list(request_filter.response_codes),
        "log_types": list(request_filter.log_types),
    }


# A page of events stays well under the 4 MB a gRPC client takes by default,
# whatever the events hold (one event is at most ~250 KB: bodies are capped).
PAGE_BYTES = 1 << 20


def _start_after(spool: SpoolView, since_event_id: str) -> int:
    seq = spool.queries.seq_of(since_event_id)
    if seq is None:
        raise NotFoundError(
            f"event {since_event_id} is not kept on this node (unknown, or "
            "older than the retention window)"
        )
    return seq


class AuditLogServicer(audit_log_pb2_grpc.AuditLogServiceServicer):
    def __init__(
        self,
        spool: SpoolView,
        origin: str,
        verifier_keys: list[str],
        queries: ExportedLogQueries,
        *,
        max_tails: int,
    ) -> None:
        self.spool = spool
        self.origin = origin
        self.verifier_keys = verifier_keys
        self.queries = queries
        # Each tail holds a server thread while it lasts: a few at most, so that tails
        # (an auditor's, or a stolen token's) never take the threads every other call,
        # a login or a health check, needs (found by a review helper: 16 took them all).
        self._tails = CallSlots(max_tails)

    def QueryEvents(
        self, request: pb.QueryEventsRequest, context: grpc.ServicerContext
    ) -> pb.QueryEventsResponse:
        return self.queries.run(request, context.time_remaining())

    def GetVerifierKeys(
        self, request: pb.GetVerifierKeysRequest, context: grpc.ServicerContext
    ) -> pb.GetVerifierKeysResponse:
        return pb.GetVerifierKeysResponse(origin=self.origin, verifier_keys=self.verifier_keys)

    def GetEventCatalog(
        self, request: pb.GetEventCatalogRequest, context: grpc.ServicerContext
    ) -> pb.GetEventCatalogResponse:
        return catalog_response(request.format)

    def ListEvents(
        self, request: pb.ListEventsRequest, context: grpc.ServicerContext
    ) -> pb.ListEventsResponse:
        limit = page_limit(request.page_size, default=100)
        after = 0
        if request.page_token:
            after = decode_page_token(request.page_token, "after")
        elif request.since_event_id:
            after = _start_after(self.spool, request.since_event_id)
        page = self.spool.queries.page(
            since_ns=time_ns(request, "since_time"),
            until_ns=time_ns(request, "until_time"),
            after_seq=after,
            limit=limit,
            max_bytes=PAGE_BYTES,
            **_filters(request.filter),
        )
        return pb.ListEventsResponse(
            events=[item.event() for item in page.events],
            next_page_token=encode_page_token("after", page.events[-1].seq) if page.more else "",
        )

    def TailEvents(
        self, request: pb.TailEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TailEventsResponse]:
        after = (
            _start_after(self.spool, request.since_event_id)
            if request.since_event_id
            else self.spool.last_seq
        )
        filters = _filters(request.filter)
        give_back = self._tails.take(context)
        if give_back is None:
            raise ResourceExhaustedError(
                f"{self._tails.size} event tails are open on this node, the most it serves "
                "at once; try again later, or read the events with ListEvents"
            )
        try:
            yield from self._tail(after, filters, context)
        finally:
            give_back()

    def _tail(
        self, after: int, filters: dict[str, Any], context: grpc.ServicerContext
    ) -> Iterator[pb.TailEventsResponse]:
        while context.is_active():
            seen = self.spool.last_seq  # committed before the queries below
            while True:
                batch = self.spool.queries.page(
                    after_seq=after, limit=MAX_PAGE_SIZE, max_bytes=PAGE_BYTES, **filters
                )
                for item in batch.events:
                    yield pb.TailEventsResponse(event=item.event())
                    after = item.seq
                if not batch.more:
                    break
            # Every event up to `seen` was considered: the ones left out do not match.
            after = max(after, seen)
            self.spool.wait_for_events(after, timeout=1.0)
            # Its caller may have lost the right to it while nothing matched.
            recheck_caller()
