"""Sigma correlation rules, evaluated in one pass over the detection window.

pySigma's SQLite backend compiles a correlation into SQL that, for every matching
event, gathers every other event of its group within the timespan: its cost grows
with the square of a group's events. 4,000 refused calls of one standard account made
a poll take 77 s and 8 million evidence ids, and the findings behind them (an admin
made meanwhile) waited (found by a review helper). Here pySigma compiles only the
referenced rules' conditions; the rows they match are read once, ordered by time, and
each group's window slides over them: linear in the window.

A finding is made when a group's measure meets the condition, and at most once per
timespan: a brute force going on is one finding a day (its timespan), not one per
event, and its evidence is the window that met the condition (at most
`EVIDENCE_LIMIT` events, the latest).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import math
import operator
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from sigma.correlations import (
    SigmaCorrelationCondition,
    SigmaCorrelationConditionOperator,
    SigmaCorrelationRule,
    SigmaCorrelationType,
)
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

__all__ = ["EVIDENCE_LIMIT", "Correlation", "CorrelationState", "MatchedWindow"]

EVIDENCE_LIMIT = 1_000

_COMPARE: dict[SigmaCorrelationConditionOperator, Callable[[float, float], bool]] = {
    SigmaCorrelationConditionOperator.LT: operator.lt,
    SigmaCorrelationConditionOperator.LTE: operator.le,
    SigmaCorrelationConditionOperator.GT: operator.gt,
    SigmaCorrelationConditionOperator.GTE: operator.ge,
    SigmaCorrelationConditionOperator.EQ: operator.eq,
    SigmaCorrelationConditionOperator.NEQ: operator.ne,
}
_NEEDS_FIELD = {
    SigmaCorrelationType.VALUE_COUNT,
    SigmaCorrelationType.VALUE_SUM,
    SigmaCorrelationType.VALUE_AVG,
    SigmaCorrelationType.VALUE_MEDIAN,
    SigmaCorrelationType.VALUE_PERCENTILE,
}
_DISTINCT = {
    SigmaCorrelationType.EVENT_COUNT,
    SigmaCorrelationType.VALUE_COUNT,
    SigmaCorrelationType.TEMPORAL,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Row:
    rowid: int
    time: int
    slot: int  # which referenced rule it matched
    value: Any  # the condition's field, for value_* types


@dataclasses.dataclass(frozen=True, kw_only=True)
class MatchedWindow:
    """A group's window that met a correlation's condition: what becomes a finding."""

    rule: SigmaCorrelationRule
    rowids: tuple[int, ...]


@dataclasses.dataclass(kw_only=True)
class CorrelationState:
    """One group's place between polls: when it was last reported (by event time)."""

    reported_at: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Correlation:
    """A correlation rule compiled: the SQL that reads its referenced rules' rows, and
    how to measure a window of them."""

    rule: SigmaCorrelationRule
    select: str
    groups: int  # how many group-by values follow each row's slot
    span_ms: int
    slots: int

    @classmethod
    def compile(
        cls, rule: SigmaCorrelationRule, convert: Callable[[SigmaRule], list[str]]
    ) -> Correlation:
        condition = rule.condition
        if not isinstance(condition, SigmaCorrelationCondition) or condition.op not in _COMPARE:
            raise SigmaError("only a plain condition (gt, gte, lt, lte, eq, neq) is supported")
        if rule.aliases.aliases:
            raise SigmaError("field aliases are not supported")
        fields = [f"`{field}`" for field in rule.group_by or []]
        value = condition.fieldref if isinstance(condition.fieldref, str) else None
        if rule.type in _NEEDS_FIELD and value is None:
            raise SigmaError(f"a {rule.type.name.lower()} correlation needs one field")
        selects = []
        for slot, reference in enumerate(rule.rules or []):
            base = reference.rule
            if not isinstance(base, SigmaRule):
                raise SigmaError("a correlation of correlations is not supported")
            # A referenced rule is not output on its own: a copy is.
            queries = convert(dataclasses.replace(base))
            head = "SELECT * FROM logs WHERE "
            if not queries or not all(q.startswith(head) for q in queries):
                raise SigmaError(f"unexpected query for {base.title!r}: {queries!r}")
            where = " OR ".join(f"({q[len(head) :]})" for q in queries)
            columns = ", ".join(
                ["rowid", "time", str(slot), *fields, f"`{value}`" if value else "NULL"]
            )
            selects.append(f"SELECT {columns} FROM logs WHERE {where}")  # noqa: S608
        return cls(
            rule=rule,
            # In time order; an event's rows for several rules with the later rule
            # first (temporal_ordered: one event is not a chain of two rules).
            select=" UNION ALL ".join(selects) + " ORDER BY 2, 1, 3 DESC",
            groups=len(fields),
            span_ms=int(rule.timespan.seconds * 1000),
            slots=len(selects),
        )

    def matches(
        self,
        db: sqlite3.Connection,
        *,
        since_rowid: int,
        states: dict[tuple[Any, ...], CorrelationState],
    ) -> Iterator[MatchedWindow]:
        """The windows that meet the condition, ending at rows after `since_rowid`,
        once per episode; `states` keeps each group's place from poll to poll."""
        by_group: dict[tuple[Any, ...], list[_Row]] = collections.defaultdict(list)
        # Each touched group's earliest new event: windows ending there or later are
        # measured again (an event is spooled when its call ends, stamped when it
        # began: it can come after events of later times, into windows measured
        # before).
        touched: dict[tuple[Any, ...], int] = {}
        for rowid, time, slot, *rest in db.execute(self.select):
            group = tuple(v.lower() if isinstance(v, str) else v for v in rest[: self.groups])
            if time is None or None in group:  # as pySigma: an event without its group
                continue
            by_group[group].append(_Row(rowid=rowid, time=time, slot=slot, value=rest[self.groups]))
            if rowid > since_rowid:
                touched[group] = min(time, touched.get(group, time))
        for group in list(states):  # groups gone from the window are forgotten
            if group not in by_group:
                del states[group]
        for group in sorted(touched, key=repr):
            state = states.setdefault(group, CorrelationState())
            yield from self._slide(by_group[group], touched[group], state)

    def _slide(
        self, rows: list[_Row], from_time: int, state: CorrelationState
    ) -> Iterator[MatchedWindow]:
        """Report the first window from `from_time` on that meets the condition, and
        again once a timespan has passed since the last report."""
        condition = self.rule.condition
        assert isinstance(condition, SigmaCorrelationCondition)
        compare = _COMPARE[condition.op]
        measure = _Measure(self)
        window: collections.deque[_Row] = collections.deque()
        for row in rows:
            window.append(row)
            measure.add(row)
            while window[0].time < row.time - self.span_ms:
                measure.remove(window.popleft())
            if row.time < from_time:
                continue
            if state.reported_at is not None and row.time - state.reported_at <= self.span_ms:
                continue
            metric = measure.value(row.time - self.span_ms)
            if metric is not None and compare(metric, condition.count):
                state.reported_at = row.time
                rowids = list(dict.fromkeys(r.rowid for r in window))
                yield MatchedWindow(rule=self.rule, rowids=tuple(rowids[-EVIDENCE_LIMIT:]))


class _Measure:
    """A window's measure, kept as rows come in and go out."""

    def __init__(self, correlation: Correlation) -> None:
        self.kind = correlation.rule.type
        condition = correlation.rule.condition
        self.percentile = getattr(condition, "percentile", None) or 50
        # Distinct keys (events, values or rules) and how many rows hold each.
        self.keys: collections.Counter[Any] = collections.Counter()
        # value_*: each event's number once, however many rules it matched.
        self.events: collections.Counter[int] = collections.Counter()
        self.numbers: list[float] = []  # sorted
        self.total = 0.0
        # temporal_ordered: for each prefix of the rules, the latest time a chain of
        # them in order began (no removal needed: a chain is in the window if it began
        # in it).
        self.chains: list[int | None] = [None] * correlation.slots

    def _key(self, row: _Row) -> Any:
        if self.kind is SigmaCorrelationType.EVENT_COUNT:
            return row.rowid
        if self.kind is SigmaCorrelationType.TEMPORAL:
            return row.slot
        value = row.value  # value_count: COLLATE NOCASE, as pySigma's
        return value.lower() if isinstance(value, str) else value

    def add(self, row: _Row) -> None:
        if self.kind in _DISTINCT:
            key = self._key(row)
            if key is not None:
                self.keys[key] += 1
        elif self.kind is SigmaCorrelationType.TEMPORAL_ORDERED:
            # An event's rows come later rule first: a chain takes each from an
            # event before it.
            began = row.time if row.slot == 0 else self.chains[row.slot - 1]
            current = self.chains[row.slot]
            if began is not None and (current is None or began > current):
                self.chains[row.slot] = began
        else:
            self.events[row.rowid] += 1
            number = _number(row.value)
            if self.events[row.rowid] == 1 and number is not None:
                bisect.insort(self.numbers, number)
                self.total += number

    def remove(self, row: _Row) -> None:
        if self.kind in _DISTINCT:
            key = self._key(row)
            if key is not None:
                self.keys[key] -= 1
                if not self.keys[key]:
                    del self.keys[key]
        elif self.kind is not SigmaCorrelationType.TEMPORAL_ORDERED:
            self.events[row.rowid] -= 1
            if self.events[row.rowid]:
                return
            del self.events[row.rowid]
            number = _number(row.value)
            if number is not None:
                del self.numbers[bisect.bisect_left(self.numbers, number)]
                self.total -= number

    def value(self, start: int) -> float | None:
        kind = self.kind
        if kind in _DISTINCT:
            return len(self.keys)
        if kind is SigmaCorrelationType.TEMPORAL_ORDERED:
            # How many of the rules, in order, happened within the window.
            return sum(1 for began in self.chains if began is not None and began >= start)
        numbers = self.numbers
        if not numbers:
            return None
        if kind is SigmaCorrelationType.VALUE_SUM:
            return self.total
        if kind is SigmaCorrelationType.VALUE_AVG:
            return self.total / len(numbers)
        # Interpolated between the closest ranks, as pySigma's SQL does.
        percentile = 50 if kind is SigmaCorrelationType.VALUE_MEDIAN else self.percentile
        position = (len(numbers) - 1) * percentile / 100
        low = int(position)
        high = min(low + 1, len(numbers) - 1)
        return numbers[low] + (numbers[high] - numbers[low]) * (position - low)


def _number(value: Any) -> float | None:
    """A field's number: protobuf's JSON writes 64-bit integers as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None
