"""The OpenTelemetry log sink, through the SDK's OTLP exporter to an OTLP receiver run
here: one record per event, its body the event's JSON, under the call's trace."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from auditline_testing.v1 import echo_pb2, echo_pb2_grpc
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

from auditline.interceptor import AuditInterceptor, OtelLogSink
from tests.support.echo import SyncServer

TRACE_ID, SPAN_ID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


class Receiver(logs_service_pb2_grpc.LogsServiceServicer):
    """An OTLP logs endpoint that keeps what it is sent."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.lock:
            for resource_logs in request.resource_logs:
                for scope_logs in resource_logs.scope_logs:
                    self.records.extend(scope_logs.log_records)
        return logs_service_pb2.ExportLogsServiceResponse()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    kept = Receiver()
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(kept, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield kept, port
    server.stop(0).wait()


def test_events_reach_an_otlp_receiver_as_log_records(receiver: tuple[Receiver, int]) -> None:
    kept, port = receiver
    provider = LoggerProvider()
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True))
    )
    audit = AuditInterceptor(OtelLogSink(provider))
    server = SyncServer([audit])
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = echo_pb2_grpc.EchoServiceStub(channel)
            stub.Echo(
                echo_pb2.EchoRequest(text="hi"),
                metadata=(("traceparent", f"00-{TRACE_ID}-{SPAN_ID}-01"),),
                timeout=30,
            )
            with pytest.raises(grpc.RpcError):
                stub.Echo(echo_pb2.EchoRequest(action="abort"), timeout=30)
    finally:
        server.stop()
        audit.close()
        provider.shutdown()
    assert len(kept.records) == 2
    ok, refused = kept.records
    event = json.loads(ok.body.string_value)
    assert event["EventName"] == "Echo"
    assert event["Request"]["RequestParams"] == {"text": "hi"}
    assert ok.trace_id.hex() == TRACE_ID
    assert ok.span_id.hex() == SPAN_ID
    attributes = {a.key: a.value for a in refused.attributes}
    assert attributes["rpc.method"].string_value == "Echo"
    assert attributes["rpc.grpc.status_code"].int_value == 5  # NOT_FOUND
    assert refused.severity_text == "WARN"
    assert ok.event_name == "auditline.audit.event"
