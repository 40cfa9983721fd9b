"""The audit policy: per service or method, every call, only the denied or the allowed
ones, or a summary — and every call it leaves out is counted, in both flavours."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from auditline.audit.v1 import event_pb2
from auditline.interceptor import AuditPolicy, AuditRule, SummaryPolicy
from tests.interceptor.harness import FLAVOURS, Harness, R
from tests.support.outcome import code_of
from tests.support.processes import wait_for

ECHO = "auditline_testing.v1.EchoService"


def test_rules_parse_and_the_first_match_decides() -> None:
    policy = AuditPolicy.parse([f"{ECHO}/Echo=denied", f"{ECHO}/*=summary", "*=all"])
    assert policy.record_for(f"/{ECHO}/Echo") == "denied"
    assert policy.record_for(f"/{ECHO}/ListThings") == "summary"
    assert policy.record_for("/other.Service/Call") == "all"
    assert AuditPolicy().record_for(f"/{ECHO}/Echo") == "all"
    assert AuditPolicy.parse(["*=all"]).records_everything
    for bad in ("Echo=all", f"{ECHO}/Echo=some", f"{ECHO}/Echo", "*.Service/*=all"):
        with pytest.raises(ValueError, match="audit rule"):
            AuditPolicy.parse([bad])
    with pytest.raises(ValueError, match="record one of all, denied, allowed, summary"):
        AuditRule(pattern="*", record="never")


def _individual(events: list[event_pb2.ApiEvent]) -> list[event_pb2.ApiEvent]:
    return [e for e in events if e.event_name != "CallsSummarized"]


def _summaries(events: list[event_pb2.ApiEvent]) -> list[dict[str, Any]]:
    return [
        json_format.MessageToDict(e.request.request_params)
        for e in events
        if e.event_name == "CallsSummarized"
    ]


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(
    ("record", "individual_codes"),
    [
        ("summary", []),
        ("denied", ["NOT_FOUND"]),
        ("allowed", ["OK", "OK"]),
        ("all", ["OK", "OK", "NOT_FOUND"]),
    ],
)
def test_each_record_keeps_its_calls_and_counts_the_rest(
    flavour: str, record: str, individual_codes: list[str], audit_mode: str
) -> None:
    h = Harness(
        flavour,
        mode=audit_mode,
        policy=AuditPolicy.parse([f"{ECHO}/Echo={record}"]),
        summaries=SummaryPolicy(interval=3600),
    )
    try:
        assert code_of(lambda: h.stub.Echo(R(text="a"))) == grpc.StatusCode.OK
        assert code_of(lambda: h.stub.Echo(R(text="b"))) == grpc.StatusCode.OK
        assert code_of(lambda: h.stub.Echo(R(action="abort"))) == grpc.StatusCode.NOT_FOUND
        # grpc.aio sends an abort's status before the handler has finished: wait until
        # the interceptor has taken all three calls (recorded or counted), or closing
        # the server may cut the last one short.
        wait_for(
            lambda: (
                True
                if h.interceptor.summarized_calls + len(_individual(h.sink.events)) == 3
                else None
            ),
            timeout=10,
            what="the three calls recorded or counted",
            interval=0.01,
        )
    finally:
        h.close()  # writes the open summaries
    events = list(h.sink.events)
    individual = _individual(events)
    assert [e.response.response_status for e in individual] == individual_codes
    summaries = _summaries(events)
    counted = sum(int(s["calls"]) for s in summaries)
    assert len(individual) + counted == 3  # nothing left out uncounted
    for summary in summaries:
        assert summary["reason"] == "left out by the audit policy"
        assert summary["methods"] == {f"/{ECHO}/Echo": counted}
    assert h.interceptor.summarized_calls == counted
