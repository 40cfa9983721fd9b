"""Correlation rules on the node: evaluated in one pass over the window (pySigma's SQL
grows with the square of a group's events), one finding per group and episode, and
every correlation type of Sigma's specification v2."""

from __future__ import annotations

from typing import Any

import pytest

from auditline.server.detection import DetectionError, DetectionWindow, Detector, rules_text
from auditline.server.detection_correlation import EVIDENCE_LIMIT

BURST = "auditline burst of refused calls from one account"


def _refused(
    n: int, *, every_ms: int, account: str = "AKPROBE", start: int = 0
) -> list[dict[str, Any]]:
    return [
        {
            "class_uid": 6003,
            "time": 1_000_000 + start + i * every_ms,
            "status_id": 2,
            "status_code": "PERMISSION_DENIED",
            "metadata": {"uid": f"{account}-{start + i * every_ms}", "log_name": "account_api"},
            "actor": {"user": {"uid": account}},
            "api": {"operation": "ListBuckets", "service": {"name": "x"}},
        }
        for i in range(n)
    ]


def _vm_steps(records: list[dict[str, Any]]) -> tuple[int, int]:
    """SQLite's virtual machine steps (in thousands) to evaluate the shipped rules over
    these records, and the findings."""
    window = DetectionWindow(Detector(rules_text()))
    window.add(records)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    window.db.set_progress_handler(count, 1000)
    found = window.detect(since_rowid=0)
    window.close()
    return steps[0], len(found)


def test_a_burst_costs_in_proportion_to_its_events_and_makes_one_finding() -> None:
    """4,000 refused calls of one account within the timespan made pySigma's SQL take
    77 s a poll (and 8 million evidence ids), blinding the engine meanwhile."""
    small, small_found = _vm_steps(_refused(400, every_ms=10))
    large, large_found = _vm_steps(_refused(4_000, every_ms=10))
    assert small_found == large_found == 1
    assert large < 15 * small  # ten times the events; pySigma's SQL: ~100 times


def test_a_correlation_is_one_finding_per_timespan_while_it_goes_on() -> None:
    """Refused every 6 s for 20 minutes (the rule: 20 in 5 minutes): reported when
    first met, then once per 5 minutes, the same whether polled once or every few
    events; quiet for more than the timespan, then again: a new finding."""
    records = _refused(200, every_ms=6_000) + _refused(20, every_ms=1_000, start=2_000_000)
    window = DetectionWindow(Detector(rules_text()))
    window.add(records)
    at_once = [d.event_ids for d in window.detect(since_rowid=0)]
    window.close()

    window = DetectionWindow(Detector(rules_text()))
    polled = []
    for first in range(0, len(records), 7):
        since = window.last_rowid
        window.add(records[first : first + 7])
        polled += [d.event_ids for d in window.detect(since_rowid=since)]
    window.close()

    assert polled == at_once
    times = [int(ids[-1].rsplit("-", 1)[1]) for ids in at_once]
    # First met at the 20th call (114 s); then the first call more than 300 s after
    # each report; then the second burst's 20th call.
    assert times == [114_000, 420_000, 726_000, 1_032_000, 2_019_000]
    assert all(len(ids) == 20 or len(ids) == 51 for ids in at_once)
    assert len(at_once[0]) == 20


def test_evidence_is_bounded() -> None:
    rule = """
title: base
name: refused
logsource: {product: auditline}
detection: {s: {status_code: PERMISSION_DENIED}, condition: s}
---
title: many refused
correlation: {type: event_count, rules: [refused], group-by: [actor.user.uid], timespan: 1h,
  condition: {gte: 3000}}
"""
    window = DetectionWindow(Detector(rule))
    records = _refused(3_000, every_ms=1)
    window.add(records)
    (found,) = window.detect(since_rowid=0)
    assert len(found.event_ids) == EVIDENCE_LIMIT
    assert found.event_ids[-1] == records[-1]["metadata"]["uid"]  # the latest kept
    window.close()


def _event(
    uid: str, operation: str, time_s: int, user: str = "u", size: float | None = None
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "class_uid": 6003,
        "time": time_s * 1000,
        "metadata": {"uid": uid},
        "actor": {"user": {"uid": user}},
        "api": {"operation": operation},
    }
    if size is not None:
        record["api"]["request"] = {"data": {"size": size}}
    return record


BASES = """
title: login
name: login
logsource: {product: auditline}
detection: {s: {api.operation: Login}, condition: s}
---
title: delete
name: delete
logsource: {product: auditline}
detection: {s: {api.operation: DeleteBucket}, condition: s}
"""


def _titles(correlation: str, records: list[dict[str, Any]]) -> list[tuple[str, tuple[str, ...]]]:
    found = Detector(BASES + "---\n" + correlation).run(records)
    return [(d.title, d.event_ids) for d in found if d.title == "c"]


@pytest.mark.parametrize(
    ("correlation", "events", "expected"),
    [
        (  # both rules within a minute, in any order
            "type: temporal\n  rules: [login, delete]\n"
            "  group-by: [actor.user.uid]\n  timespan: 1m",
            [("a", "DeleteBucket", 0), ("b", "Login", 30), ("x", "Login", 200)],
            [("a", "b")],
        ),
        (  # in order only: a delete before the login is not it
            "type: temporal_ordered\n  rules: [login, delete]\n"
            "  group-by: [actor.user.uid]\n  timespan: 1m",
            [
                ("a", "DeleteBucket", 0),
                ("b", "Login", 30),
                ("c", "DeleteBucket", 100),
                ("d", "Login", 140),
                ("e", "DeleteBucket", 150),
            ],
            [("c", "d", "e")],  # the window's events
        ),
        (  # distinct values, case-insensitively
            "type: value_count\n  rules: [login]\n  timespan: 1m\n"
            "  condition: {field: actor.user.uid, gte: 3}",
            [
                ("a", "Login", 0, "A"),
                ("b", "Login", 1, "a"),
                ("c", "Login", 2, "B"),
                ("d", "Login", 3, "C"),
            ],
            [("a", "b", "c", "d")],
        ),
    ],
)
def test_each_correlation_type(
    correlation: str, events: list[tuple[Any, ...]], expected: list[tuple[str, ...]]
) -> None:
    text = f"title: c\ncorrelation:\n  {correlation}\n"
    records = [_event(*e) for e in events]
    assert [ids for _, ids in _titles(text, records)] == expected


def test_value_aggregates() -> None:
    def sizes(kind: str, condition: str, values: list[float]) -> list[tuple[str, ...]]:
        text = (
            f"title: c\ncorrelation:\n  type: {kind}\n  rules: [delete]\n"
            "  group-by: [actor.user.uid]\n"
            f"  timespan: 1m\n  condition: {{field: api.request.data.size, {condition}}}\n"
        )
        records = [_event(f"e{i}", "DeleteBucket", i * 10, size=v) for i, v in enumerate(values)]
        return [ids for _, ids in _titles(text, records)]

    assert sizes("value_sum", "gt: 100", [40, 50, 20, 1]) == [("e0", "e1", "e2")]
    assert sizes("value_avg", "gte: 60", [10, 90, 100]) == [("e0", "e1", "e2")]
    assert sizes("value_median", "gte: 60", [10, 90, 100]) == [("e0", "e1", "e2")]
    assert sizes("value_sum", "gt: 100", [60, 60]) == [("e0", "e1")]
    # Out of the window (a minute), the earliest no longer counts.
    assert sizes("value_sum", "gt: 100", [60, 1, 1, 1, 1, 1, 1, 60]) == []


LOGINS = """---
title: logins
name: logins
correlation: {type: event_count, rules: [login], timespan: 1m, condition: {gte: 2}}
"""


@pytest.mark.parametrize(
    "correlation",
    [
        "type: event_count\n  rules: [login]\n  timespan: 1m\n"
        "  aliases: {who: {login: actor.user.uid}}\n  group-by: [who]\n  condition: {gte: 2}",
        "type: event_count\n  rules: [logins]\n  timespan: 1m\n  condition: {gte: 2}",
    ],
)
def test_what_the_node_does_not_evaluate_is_refused_at_once(correlation: str) -> None:
    with pytest.raises(DetectionError, match="does not compile"):
        Detector(BASES + LOGINS + f"---\ntitle: c\ncorrelation:\n  {correlation}\n")


def test_an_event_spooled_after_later_ones_is_measured_where_it_belongs() -> None:
    """An event is stamped when its call began and spooled when it ended: one that
    comes after events of later times falls into windows measured before. Only
    windows ending at new rows were measured: nineteen refusals, then the one whose
    call began first, found nothing (found by a review helper)."""
    records = _refused(20, every_ms=1_000)
    window = DetectionWindow(Detector(rules_text()))
    window.add(records[1:])
    assert window.detect(since_rowid=0) == []
    since = window.last_rowid
    window.add(records[:1])
    (found,) = [d for d in window.detect(since_rowid=since) if d.title == BURST]
    assert sorted(found.event_ids) == sorted(r["metadata"]["uid"] for r in records)
    window.close()


def test_new_events_are_found_after_the_window_emptied() -> None:
    """SQLite gave the rows' ids again once the table was empty: after a quiet day
    the next poll's events were taken for old ones (found by a review helper)."""
    window = DetectionWindow(Detector(rules_text()))
    window.add(_refused(30, every_ms=1_000))
    assert [d.title for d in window.detect(since_rowid=0)] == [BURST]
    since = window.last_rowid
    window.forget_before(10**15, keep_at_most=50_000)
    window.add(_refused(25, every_ms=1_000, start=10**9))
    assert [d.title for d in window.detect(since_rowid=since)] == [BURST]
    window.close()


def test_an_event_of_several_rules_counts_once_and_numbers_as_text_count() -> None:
    """protobuf's JSON writes 64-bit integers as text; an event matching both rules
    of a correlation is one event (as pySigma's SQL takes them)."""
    text = (
        "title: c\ncorrelation:\n  type: value_sum\n  rules: [delete, deletes]\n"
        "  group-by: [actor.user.uid]\n  timespan: 1m\n"
        "  condition: {field: api.request.data.size, gt: 100}\n"
    )
    deletes = "---\ntitle: deletes\nname: deletes\nlogsource: {product: auditline}\n"
    deletes += "detection: {s: {api.operation: DeleteBucket}, condition: s}\n"
    one = [_event("e0", "DeleteBucket", 0, size=60)]
    assert Detector(BASES + deletes + "---\n" + text).run(one) == []
    two = [_event(f"e{i}", "DeleteBucket", i, size="60") for i in range(2)]  # type: ignore[arg-type]
    assert [d.event_ids for d in Detector(BASES + deletes + "---\n" + text).run(two)] == [
        ("e0", "e1")
    ]
    ordered = (
        "title: c\ncorrelation:\n  type: temporal_ordered\n  rules: [delete, deletes]\n"
        "  group-by: [actor.user.uid]\n  timespan: 1m\n"
    )
    assert Detector(BASES + deletes + "---\n" + ordered).run(one) == []
