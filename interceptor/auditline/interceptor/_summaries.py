"""Summaries of unauthenticated calls past a rate: counted, never dropped silently.

An unauthenticated caller (no principal at the end of the call) must not be able
to fill the audit log. Each source gets a token bucket (`rate` events a second,
`burst` at once) and all sources together twenty times that; calls past it are not
recorded one by one but counted per source — how many, which methods, which codes,
which related events — and written as one `CallsSummarized` event per source and
interval. A source is an address, or for IPv6 its /64 (what one subscriber is
given): a caller with a /64 to pick addresses from is one source, not 2^64.

What a summary holds is bounded, whatever callers send: the methods of a source are
named up to `MAX_SUMMARY_METHODS` (the rest counted together: callers choose the names
of methods the server does not have), and the sources tracked up to `max_sources`.
Past that, the quieter half of the sources is folded into one summary of the other
sources of the interval (in bulk: a sort per `max_sources / 2` new sources, never a
scan per call, nor an event per source).
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
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
# IPv6 addresses within one such prefix are one source.
_IPV6_SOURCE_PREFIX = 64


@dataclasses.dataclass(frozen=True, kw_only=True)
class SummaryPolicy:
    """When unauthenticated calls are summarized rather than recorded one by one."""

    rate: float = 10.0  # events a second per source
    burst: int = 50
    interval: float = 60.0  # seconds a summary covers at most
    max_sources: int = 10_000

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or self.interval <= 0 or self.max_sources < 1:
            raise ValueError("rate, burst, interval and max_sources must be positive")


def source_of(address: str) -> str:
    """The source an address counts as: itself, or the /64 of an IPv6 address."""
    if ":" not in address or address.startswith("unix:"):
        return address  # IPv4 (the common case), or no address at all
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    host_bits = 128 - _IPV6_SOURCE_PREFIX  # (shifting: half the cost of an IPv6Network)
    return f"{ipaddress.IPv6Address(int(ip) >> host_bits << host_bits)}/{_IPV6_SOURCE_PREFIX}"


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


def _bump(counts: dict[str, int], key: str, by: int = 1) -> None:
    counts[key] = counts.get(key, 0) + by


@dataclasses.dataclass(slots=True)
class _Counts:
    first_ns: int
    last_ns: int
    opened: float  # monotonic time of the first call counted
    address: str  # the first address seen (of its /64, for IPv6)
    network: str = ""  # the /64, for IPv6
    folded: bool = False  # the counts of the sources folded together
    calls: int = 0
    sources: int = 1
    methods: dict[str, int] = dataclasses.field(default_factory=dict)
    other_methods: int = 0  # calls to methods past MAX_SUMMARY_METHODS
    codes: dict[str, int] = dataclasses.field(default_factory=dict)
    events: dict[str, int] = dataclasses.field(default_factory=dict)

    def add_method(self, method: str, by: int = 1) -> None:
        if method in self.methods or len(self.methods) < MAX_SUMMARY_METHODS:
            _bump(self.methods, method, by)
        else:
            self.other_methods += by

    def fold(self, other: _Counts) -> None:
        """Count `other`'s calls in these."""
        self.opened = min(self.opened, other.opened)
        self.first_ns = min(self.first_ns, other.first_ns)
        self.last_ns = max(self.last_ns, other.last_ns)
        self.calls += other.calls
        self.sources += other.sources
        for method, n in other.methods.items():
            self.add_method(method, n)
        self.other_methods += other.other_methods
        for code, n in other.codes.items():
            _bump(self.codes, code, n)
        for name, n in other.events.items():
            _bump(self.events, name, n)

    def params(self, reason: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "reason": reason,
            "calls": self.calls,
            "methods": self.methods,
            "codes": self.codes,
            "events": self.events,
        }
        if self.other_methods:
            params["other_methods"] = self.other_methods
        if self.network:
            params["source_network"] = self.network
        if self.folded:
            params["sources"] = self.sources
        return params


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
        # Least recently seen first (O(1) to move and to evict, unlike a dict's front).
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()
        self._global = _Bucket(float(policy.burst * _GLOBAL_FACTOR), clock())
        # In the order they were opened: the first is the first due.
        self._counts: collections.OrderedDict[str, _Counts] = collections.OrderedDict()
        self._folded: _Counts | None = None  # the sources folded out of `_counts`
        self.summarized = 0  # calls counted in summaries so far

    def record_individually(self, address: str) -> bool:
        """Whether the next unauthenticated call from `address` gets its own event."""
        policy = self.policy
        source = source_of(address)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(source)
            if bucket is None:
                if len(self._buckets) >= policy.max_sources:
                    self._buckets.popitem(last=False)
                bucket = self._buckets[source] = _Bucket(float(policy.burst), now)
            else:
                self._buckets.move_to_end(source)
            own = bucket.take(policy.rate, policy.burst, now)
            # However many sources there are, together they get no more than this.
            return own and self._global.take(
                policy.rate * _GLOBAL_FACTOR, policy.burst * _GLOBAL_FACTOR, now
            )

    def count(self, *, source: str, method: str, code: str, related: list[str], at_ns: int) -> None:
        """Count a call (from address `source`) that was not recorded individually."""
        key = source_of(source)
        with self._lock:
            counts = self._counts.get(key)
            if counts is None:
                if len(self._counts) >= self.policy.max_sources:
                    self._fold_quieter_half()
                counts = _Counts(
                    first_ns=at_ns,
                    last_ns=at_ns,
                    opened=self._clock(),
                    address=source,
                    network=key if "/" in key else "",
                )
                self._counts[key] = counts
            counts.calls += 1
            counts.last_ns = max(counts.last_ns, at_ns)
            counts.add_method(method)
            _bump(counts.codes, code)
            for name in related:
                _bump(counts.events, name)
            self.summarized += 1

    def _fold_quieter_half(self) -> None:
        """Fold the quieter half of the sources (at least) into one summary of folded
        sources, so that the busy ones keep a summary of their own."""
        calls = sorted(c.calls for c in self._counts.values())
        threshold = calls[len(calls) // 2]
        quiet = [source for source, c in self._counts.items() if c.calls <= threshold]
        for source in quiet:
            counts = self._counts.pop(source)
            if self._folded is None:
                self._folded = _Counts(
                    first_ns=counts.first_ns,
                    last_ns=counts.last_ns,
                    opened=counts.opened,
                    address="",
                    folded=True,
                    sources=0,
                )
            self._folded.fold(counts)

    def due(self, *, everything: bool = False) -> list[EventDocument]:
        """The summaries whose interval has passed (all of them with `everything`)."""
        now = self._clock()
        interval = self.policy.interval
        ready: list[_Counts] = []
        with self._lock:
            # Opened in order: the first one not due ends the search.
            while self._counts:
                source, counts = next(iter(self._counts.items()))
                if not everything and now - counts.opened < interval:
                    break
                del self._counts[source]
                ready.append(counts)
            folded = self._folded
            if folded is not None and (everything or now - folded.opened >= interval):
                self._folded = None
                ready.append(folded)
        # Made outside the lock: calls being counted need not wait for them.
        return [self._summary(counts) for counts in ready]

    def _summary(self, counts: _Counts) -> EventDocument:
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
        event.request.source_ip = counts.address
        event.request.request_time.FromNanoseconds(counts.first_ns)
        event.request.request_params.update(counts.params(self.reason))
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
