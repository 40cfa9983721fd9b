"""Summaries of unauthenticated calls past a rate: counted, never dropped silently.

An unauthenticated caller (no principal at the end of the call) must not be able
to fill the audit log. Each source address gets a token bucket (`rate` events a
second, `burst` at once) and all sources together twenty times that; calls past
it are not recorded one by one but counted per source — how many, which methods,
which codes, which related events — and written as one `CallsSummarized` event
per source and interval. A summary names at most `MAX_SUMMARY_METHODS` methods and
counts the calls to any other together (callers choose the names of methods the
server does not have). The number of sources tracked is bounded too: when it is
reached, the quietest source's counts are written at once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from auditline.audit.v1 import event_pb2, options_pb2
from auditline.interceptor._formats import apievent_dict
from auditline.interceptor._policy import AuditPolicy
from auditline.interceptor._types import EventDocument

__all__ = ["MAX_SUMMARY_METHODS", "SUMMARY_NAME", "CallSummarizer", "Counting", "SummaryPolicy"]

SUMMARY_NAME = "CallsSummarized"
_GLOBAL_FACTOR = 20
# Methods named one by one in a summary; the calls to any other are counted together.
MAX_SUMMARY_METHODS = 10


@dataclasses.dataclass(frozen=True, kw_only=True)
class SummaryPolicy:
    """When unauthenticated calls are summarized rather than recorded one by one."""

    rate: float = 10.0  # events a second per source address
    burst: int = 50
    interval: float = 60.0  # seconds a summary covers at most
    max_sources: int = 10_000

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or self.interval <= 0 or self.max_sources < 1:
            raise ValueError("rate, burst, interval and max_sources must be positive")


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at

    def take(self, rate: float, burst: int, now: float) -> bool:
        self.tokens = min(burst, self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclasses.dataclass(slots=True)
class _Counts:
    first_ns: int
    last_ns: int
    opened: float  # monotonic time of the first call counted
    calls: int = 0
    methods: dict[str, int] = dataclasses.field(default_factory=dict)
    other_methods: int = 0  # calls to methods past MAX_SUMMARY_METHODS
    codes: dict[str, int] = dataclasses.field(default_factory=dict)
    events: dict[str, int] = dataclasses.field(default_factory=dict)

    def add_method(self, method: str) -> None:
        if method in self.methods or len(self.methods) < MAX_SUMMARY_METHODS:
            _bump(self.methods, method)
        else:
            self.other_methods += 1


def _bump(counts: dict[str, int], key: str, by: int = 1) -> None:
    counts[key] = counts.get(key, 0) + by


class CallSummarizer:
    """Per-source rates and the counts of the calls past them. Thread-safe."""

    def __init__(
        self,
        policy: SummaryPolicy,
        *,
        node_id: str = "",
        reason: str = "unauthenticated calls past their rate",
        log_type: int = event_pb2.LOG_TYPE_ACCOUNT_API,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.node_id = node_id
        self.reason = reason  # written in each summary: why its calls were counted
        self.log_type = log_type  # the log its summaries are filed under
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._global = _Bucket(float(policy.burst * _GLOBAL_FACTOR), clock())
        self._counts: dict[str, _Counts] = {}
        self._ready: list[EventDocument] = []
        self.summarized = 0  # calls counted in summaries so far

    def record_individually(self, source: str) -> bool:
        """Whether the next unauthenticated call from `source` gets its own event."""
        policy = self.policy
        now = self._clock()
        with self._lock:
            bucket = self._buckets.pop(source, None)  # re-inserted: most recent last
            if bucket is None:
                bucket = _Bucket(float(policy.burst), now)
                if len(self._buckets) >= policy.max_sources:
                    self._buckets.pop(next(iter(self._buckets)))
            self._buckets[source] = bucket
            own = bucket.take(policy.rate, policy.burst, now)
            return own and self._global.take(
                policy.rate * _GLOBAL_FACTOR, policy.burst * _GLOBAL_FACTOR, now
            )

    def count(self, *, source: str, method: str, code: str, related: list[str], at_ns: int) -> None:
        """Count a call that was not recorded individually."""
        with self._lock:
            counts = self._counts.get(source)
            if counts is None:
                if len(self._counts) >= self.policy.max_sources:
                    quietest = min(self._counts, key=lambda s: self._counts[s].calls)
                    self._ready.append(self._summary(quietest, self._counts.pop(quietest)))
                counts = _Counts(first_ns=at_ns, last_ns=at_ns, opened=self._clock())
                self._counts[source] = counts
            counts.calls += 1
            counts.last_ns = max(counts.last_ns, at_ns)
            counts.add_method(method)
            _bump(counts.codes, code)
            for name in related:
                _bump(counts.events, name)
            self.summarized += 1

    def due(self, *, everything: bool = False) -> list[EventDocument]:
        """The summaries whose interval has passed (all of them with `everything`)."""
        now = self._clock()
        with self._lock:
            ready, self._ready = self._ready, []
            for source in [
                s
                for s, c in self._counts.items()
                if everything or now - c.opened >= self.policy.interval
            ]:
                ready.append(self._summary(source, self._counts.pop(source)))
        return ready

    def _summary(self, source: str, counts: _Counts) -> EventDocument:
        event = event_pb2.ApiEvent(
            event_name=SUMMARY_NAME,
            event_id=str(uuid.uuid4()),  # like every event: findings and proofs name it
            version="2",
            node_id=self.node_id,
            service="auditline.audit.v1",
            method=SUMMARY_NAME,
            activity=options_pb2.ACTIVITY_OTHER,
            log_type=self.log_type,  # type: ignore[arg-type]
        )
        event.request.source_ip = source
        event.request.request_time.FromNanoseconds(counts.first_ns)
        params: dict[str, Any] = {
            "reason": self.reason,
            "calls": counts.calls,
            "methods": counts.methods,
            "codes": counts.codes,
            "events": counts.events,
        }
        if counts.other_methods:
            params["other_methods"] = counts.other_methods
        event.request.request_params.update(params)
        event.request.message_count = counts.calls
        event.response.response_time.FromNanoseconds(counts.last_ns)
        event.response.response_status = "OK"
        event.response.response_body.SetInParent()
        return EventDocument(
            document=apievent_dict(event), at_ns=counts.first_ns, end_ns=counts.last_ns
        )


class Counting:
    """Where calls are counted instead of recorded: those the audit policy leaves out
    (in a log of their own), and unauthenticated calls past their source's rate."""

    def __init__(
        self, summaries: SummaryPolicy | None, policy: AuditPolicy, *, node_id: str
    ) -> None:
        self.policy = policy
        self.rate = CallSummarizer(summaries, node_id=node_id) if summaries else None
        self.left_out = (
            None
            if policy.records_everything
            else CallSummarizer(
                summaries or SummaryPolicy(),
                node_id=node_id,
                reason="left out by the audit policy",
                # Routine probes do not crowd the account API log.
                log_type=event_pb2.LOG_TYPE_SUMMARIES,
            )
        )
        self.summarizers = tuple(s for s in (self.rate, self.left_out) if s is not None)

    def summarizer_for(
        self,
        *,
        method: str,
        described: bool,
        authenticated: bool,
        allowed: Callable[[], bool],
        source: Callable[[], str],
    ) -> CallSummarizer | None:
        """The summarizer that counts this call; None: it gets its own event. (`allowed`
        and `source` are asked only when needed: they cost a status and a peer parse.)
        The policy remembers its decision only for `described` methods, not for names
        callers chose."""
        if self.left_out is not None and not self.policy.individually(
            method, allowed=allowed(), remember=described
        ):
            return self.left_out
        if self.rate is None or authenticated or self.rate.record_individually(source()):
            return None
        return self.rate
