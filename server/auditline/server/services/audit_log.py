"""AuditLogService: the event catalog (ListEvents and TailEvents come with audit
administration)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn

import grpc

from auditline.audit.v1 import audit_log_pb2 as pb
from auditline.audit.v1 import audit_log_pb2_grpc
from auditline.server.catalog import catalog_response


def _not_yet(context: grpc.ServicerContext, method: str) -> NoReturn:
    context.abort(
        grpc.StatusCode.UNIMPLEMENTED,
        f"{method} is not implemented yet (it lands with audit administration)",
    )
    raise AssertionError("abort raises")


class AuditLogServicer(audit_log_pb2_grpc.AuditLogServiceServicer):
    def GetEventCatalog(
        self, request: pb.GetEventCatalogRequest, context: grpc.ServicerContext
    ) -> pb.GetEventCatalogResponse:
        return catalog_response(request.format)

    def ListEvents(
        self, request: pb.ListEventsRequest, context: grpc.ServicerContext
    ) -> pb.ListEventsResponse:
        _not_yet(context, "ListEvents")

    def TailEvents(
        self, request: pb.TailEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TailEventsResponse]:
        _not_yet(context, "TailEvents")
