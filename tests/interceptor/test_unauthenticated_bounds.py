"""What an unauthenticated caller can make the audit log hold, and what it costs: the
events a handler records with its call are cut as the call's own, method names the
server does not have are recorded cut and cached nowhere, and summaries stay bounded
(and cheap) however many methods and source addresses a caller uses."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import HealthServicer

import tests.support.echo as echo
from auditline.audit.v1 import event_pb2
from auditline.interceptor import (
    AuditInterceptor,
    AuditPolicy,
    MemorySink,
    SummaryPolicy,
    method_info,
    record_event,
)
from auditline.interceptor import _methods as methods_module
from auditline.interceptor._bounds import (
    MAX_ERROR_BYTES,
    MAX_HEADER_CHARS,
    MAX_UNKNOWN_METHOD_CHARS,
)
from auditline.interceptor._summaries import MAX_SUMMARY_METHODS, CallSummarizer
from tests.interceptor.harness import FLAVOURS, Harness, R, raw_call
from tests.support.outcome import code_of

ECHO = "auditline_testing.v1.EchoService"
CAP = 4096  # the unauthenticated body cap the tests' interceptors get
HUGE = "A" * 200_000
MARKER = "…(cut from "


def _params(event: event_pb2.ApiEvent) -> dict[str, Any]:
    return json_format.MessageToDict(event.request.request_params)


# --- events a handler records with an unauthenticated call -------------------------------


def _huge_event() -> event_pb2.ApiEvent:
    """An IAM-like event that copies what the caller sent, as a failed login does."""
    event = event_pb2.ApiEvent(
        event_name="FailedLoginUnknownAccessKey", version="2", log_type=event_pb2.LOG_TYPE_IAM
    )
    event.request.access_key = HUGE
    event.request.account_name = HUGE
    event.request.user_agent = HUGE
    event.request.request_time.GetCurrentTime()
    event.request.request_params.update({"access_key": HUGE, "attempt": HUGE})
    event.request.metadata.update({f"k{n}": HUGE for n in range(20)})
    event.response.response_time.GetCurrentTime()
    event.response.response_error = HUGE
    event.response.error_details.extend([HUGE] * 20)
    event.response.response_body.update({"echo": HUGE})
    return event


@pytest.fixture
def records_huge_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Echo handler records `_huge_event()`, never summarized with its call."""
    original, original_async = echo.act, echo.act_async

    def act(request: Any, context: Any) -> Any:
        assert record_event(_huge_event(), summarize=False)
        return original(request, context)

    async def act_async(request: Any, context: Any) -> Any:
        assert record_event(_huge_event(), summarize=False)
        return await original_async(request, context)

    monkeypatch.setattr(echo, "act", act)
    monkeypatch.setattr(echo, "act_async", act_async)


@pytest.mark.usefixtures("records_huge_events")
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_events_a_handler_records_are_cut_as_its_unauthenticated_call(
    flavour: str, audit_mode: str
) -> None:
    # The second call is past its source's rate: its event is counted, the handler's
    # (not summarized) goes on its own.
    h = Harness(
        flavour,
        mode=audit_mode,
        unauthenticated_max_body_bytes=CAP,
        summaries=SummaryPolicy(rate=0.001, burst=1, interval=3600),
    )
    try:
        assert code_of(lambda: h.stub.Echo(R(text="first"))) == grpc.StatusCode.OK
        assert code_of(lambda: h.stub.Echo(R(text="second"))) == grpc.StatusCode.OK
        events = h.events(3)
    finally:
        h.close()
    related = [e for e in events if e.event_name == "FailedLoginUnknownAccessKey"]
    assert len(related) == 2
    for event in related:
        request, response = event.request, event.response
        for text in (request.access_key, request.account_name, request.user_agent):
            assert text == HUGE[:MAX_HEADER_CHARS] + f"{MARKER}{len(HUGE)} characters)"
        assert len(json_format.MessageToJson(request.request_params)) < CAP + 100
        assert request.params_truncated
        assert sum(len(k) + len(v) for k, v in request.metadata.items()) <= CAP
        assert len(response.response_error.encode()) <= MAX_ERROR_BYTES
        assert response.error_truncated
        assert sum(len(line) for line in response.error_details) <= CAP
        assert response.body_truncated
        # 4.4 MB as the handler made it.
        assert event.ByteSize() < 4 * CAP + 10 * MAX_HEADER_CHARS


# --- method names the server does not have ----------------------------------------------


def _long_unknown(n: int, length: int = 4000) -> str:
    return f"/evil.Svc{n}/Get{n:05d}" + "A" * length


def test_unknown_method_names_are_cut_and_kept_in_no_cache() -> None:
    known = method_info(f"/{ECHO}/Echo")
    assert known.described
    assert method_info(f"/{ECHO}/Echo") is known  # described methods: made once
    before = len(methods_module._DESCRIBED)
    for n in range(200):
        name = _long_unknown(n, 60_000)
        info = method_info(name)
        assert not info.described
        assert info.full_method == name[:MAX_UNKNOWN_METHOD_CHARS] + (
            f"{MARKER}{len(name)} characters)"
        )
        for part in (info.service, info.method, info.event_name):
            assert len(part) <= MAX_UNKNOWN_METHOD_CHARS + len(MARKER) + 20
        assert info.method.startswith(f"Get{n:05d}AAA")
        assert info.method.endswith(" characters)")
    # Another path to a described method is not it (gRPC routes only the exact one).
    assert not method_info(f"//{ECHO}/Echo").described
    assert len(methods_module._DESCRIBED) == before
    # A short unknown name is recorded whole.
    assert method_info("/evil.Svc/Short").full_method == "/evil.Svc/Short"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_calls_to_long_unknown_methods_are_recorded_cut_and_cost_nothing_per_name(
    flavour: str, audit_mode: str
) -> None:
    calls = 40
    policy = AuditPolicy.parse(["grpc.health.v1.Health/*=summary"])
    h = Harness(
        flavour,
        mode=audit_mode,
        policy=policy,
        summaries=SummaryPolicy(rate=0.001, burst=1, interval=3600),
    )
    try:
        for n in range(calls):
            call = raw_call(h.channel, _long_unknown(n))
            assert code_of(functools.partial(call, b"")) == grpc.StatusCode.UNIMPLEMENTED
        (first,) = h.events(1)  # the rest are past the source's rate
        # Policy decisions are kept for described methods only.
        assert policy._decisions == {}
    finally:
        h.close()
    limit = MAX_UNKNOWN_METHOD_CHARS + len(MARKER) + 20
    assert first.event_name.startswith("Get00000AAA")
    assert MARKER in first.event_name
    assert len(first.event_name) <= limit
    assert len(first.method) <= limit
    assert len(first.service) <= limit
    summaries = [e for e in h.sink.events if e.event_name == "CallsSummarized"]
    (summary,) = summaries
    params = _params(summary)
    assert params["calls"] == calls - 1
    assert len(params["methods"]) == MAX_SUMMARY_METHODS
    assert all(len(name) <= limit for name in params["methods"])
    assert params["other_methods"] == calls - 1 - MAX_SUMMARY_METHODS
    assert summary.ByteSize() < (MAX_SUMMARY_METHODS + 2) * limit


# --- summaries of many methods and many sources -----------------------------------------


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _flood(summarizer: CallSummarizer, sources: Iterator[str], method: str = "/x.Y/Z") -> int:
    """One call from each source; how many were recorded individually."""
    individual = 0
    for n, source in enumerate(sources):
        if summarizer.record_individually(source):
            individual += 1
        else:
            summarizer.count(
                source=source, method=method, code="UNAUTHENTICATED", related=[], at_ns=n
            )
    return individual


def _ipv4(count: int) -> Iterator[str]:
    return (f"198.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in range(count))


def test_a_summary_names_a_bounded_number_of_methods_and_counts_the_rest() -> None:
    summarizer = CallSummarizer(SummaryPolicy(rate=0.001, burst=1, interval=60), clock=Clock())
    for n in range(500):
        summarizer.count(
            source="203.0.113.9", method=f"/x.Y/M{n}", code="UNIMPLEMENTED", related=[], at_ns=n
        )
    (summary,) = summarizer.due(everything=True)
    params = summary.document["Request"]["RequestParams"]
    assert params["calls"] == 500
    assert len(params["methods"]) == MAX_SUMMARY_METHODS
    assert sum(params["methods"].values()) + params["other_methods"] == 500


def test_many_sources_are_folded_into_one_summary_not_an_event_each() -> None:
    clock = Clock()
    policy = SummaryPolicy(rate=10, burst=50, interval=60, max_sources=100)
    summarizer = CallSummarizer(policy, clock=clock)
    # A busy source first: it keeps a summary of its own through the folding.
    busy = "192.0.2.1"
    for n in range(500):
        if not summarizer.record_individually(busy):
            summarizer.count(source=busy, method="/x.Y/Z", code="OK", related=[], at_ns=n)
    flood = 5000
    individual = _flood(summarizer, _ipv4(flood))
    # However many sources: together no more individual events than the global burst
    # (the clock stood still).
    assert individual == 50 * 20 - 50
    # Nothing is written before the interval ends: no event per source pushed out.
    assert summarizer.due() == []
    clock.now += 60
    summaries = [s.document for s in summarizer.due()]
    assert len(summaries) <= policy.max_sources + 1
    by_source = {s["Request"]["SourceIP"]: s["Request"]["RequestParams"] for s in summaries}
    assert by_source[busy]["calls"] == 450
    folded = by_source[""]
    assert folded["sources"] > flood - individual - policy.max_sources
    counted = sum(p["calls"] for p in by_source.values())
    assert counted == 500 + flood - 50 - individual
    assert summarizer.summarized == counted


def test_an_ipv6_64_is_one_source() -> None:
    clock = Clock()
    summarizer = CallSummarizer(SummaryPolicy(rate=10, burst=50, interval=60), clock=clock)
    addresses = [
        f"2001:db8:1:2:{n >> 32 & 0xFFFF:x}:{n >> 16 & 0xFFFF:x}:0:{n & 0xFFFF:x}"
        for n in range(3000)
    ]
    assert _flood(summarizer, iter(addresses)) == 50  # one burst for the whole /64
    clock.now += 60
    (summary,) = [s.document for s in summarizer.due()]
    assert summary["Request"]["SourceIP"] == addresses[50]
    params = summary["Request"]["RequestParams"]
    assert params["source_network"] == "2001:db8:1:2::/64"
    assert params["calls"] == 3000 - 50


# --- streams that hold no thread ------------------------------------------------------------


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
def test_open_health_watches_hold_no_server_thread(fail_closed: bool) -> None:
    """The health service's Watch sends through a callback and gives its thread back
    (gRPC's `experimental_non_blocking`). Wrapped as a blocking stream, each open
    watch held one of the server's threads: a caller with as many watches as threads
    stopped the server (a review helper stopped `auditline serve` with 16). Each
    watch is still recorded when it ends."""
    sink = MemorySink()
    interceptor = AuditInterceptor(sink, fail_closed=fail_closed)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[interceptor])
    health = HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub: Any = health_pb2_grpc.HealthStub(channel)  # typed without its methods
    watches = [stub.Watch(health_pb2.HealthCheckRequest(), timeout=10) for _ in range(4)]
    try:
        for watch in watches:
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        checked = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert checked == health_pb2.HealthCheckResponse(
            status=health_pb2.HealthCheckResponse.SERVING
        )
        for watch in watches:
            watch.cancel()
        sink.wait_for(5)
        assert interceptor.flush(10)
    finally:
        for watch in watches:
            watch.cancel()
        channel.close()
        server.stop(None)
        interceptor.close()
    methods = sorted(event.method for event in sink.events)
    assert methods == ["Check"] + ["Watch"] * 4
    codes = {e.method: e.response.response_status for e in sink.events}
    assert codes == {"Check": "OK", "Watch": "CANCELLED"}


def test_a_non_blocking_stream_its_handler_never_ends_is_recorded_when_it_ends() -> None:
    """A handler that sends through a callback and never ends the call (it does not
    hear the client go, as Watch does): recorded all the same, when the call ends."""

    def behavior(request: bytes, context: Any, send_response_callback: Any) -> None:
        send_response_callback(b"first")

    behavior.experimental_non_blocking = True  # type: ignore[attr-defined]
    handler = grpc.method_handlers_generic_handler(
        "test.Quiet", {"Listen": grpc.unary_stream_rpc_method_handler(behavior)}
    )
    sink = MemorySink()
    interceptor = AuditInterceptor(sink)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[interceptor])
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    listen: Any = channel.unary_stream("/test.Quiet/Listen")
    stream = listen(b"", timeout=10)
    try:
        assert next(stream) == b"first"
        stream.cancel()
        sink.wait_for(1)
        assert interceptor.flush(10)
    finally:
        stream.cancel()
        channel.close()
        server.stop(None)
        interceptor.close()
    (event,) = sink.events
    assert (event.method, event.response.response_status) == ("Listen", "CANCELLED")
