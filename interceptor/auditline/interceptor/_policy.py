"""What to audit, per service or method: every call, only the denied or the allowed
ones, or a counted summary per interval.

The gRPC audit-logging proposal (A59) has the same conditions per policy
(NONE / ON_DENY / ON_ALLOW / ON_DENY_AND_ALLOW); unlike it, nothing filtered
disappears: a call that is not recorded one by one is counted in a
`CallsSummarized` event of its interval (its method, code and source), so the log
still says how many calls there were.

A rule is `pattern=record`: the pattern is `pkg.Service/Method`, `pkg.Service/*` or
`*`; `record` is `all`, `denied`, `allowed` or `summary`. The first rule that
matches a method decides; a method no rule matches is recorded (`all`). "Denied"
is any status other than OK, as the handler answered it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from functools import cached_property

__all__ = ["RECORDS", "AuditPolicy", "AuditRule"]

# What a rule may say of the calls it matches.
RECORDS = ("all", "denied", "allowed", "summary")
# Decisions kept at most: a bound even for callers of `record_for` that remember names
# they did not choose themselves.
_MAX_DECISIONS = 10_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditRule:
    pattern: str  # pkg.Service/Method, pkg.Service/* or *
    record: str  # one of RECORDS

    def __post_init__(self) -> None:
        if self.record not in RECORDS:
            raise ValueError(f"audit rule {self.pattern}: record one of {', '.join(RECORDS)}")
        service, slash, method = self.pattern.partition("/")
        if self.pattern != "*" and not (service and slash and method and "*" not in service):
            raise ValueError(
                f"audit rule pattern {self.pattern!r}: pkg.Service/Method, pkg.Service/* or *"
            )

    def matches(self, full_method: str) -> bool:
        """Whether the rule covers `/pkg.Service/Method`."""
        name = full_method.lstrip("/")
        if self.pattern == "*":
            return True
        if self.pattern.endswith("/*"):
            return name.startswith(self.pattern[:-1])
        return name == self.pattern


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditPolicy:
    """Rules, first match wins; no rule: every call is recorded."""

    rules: tuple[AuditRule, ...] = ()

    @classmethod
    def parse(cls, texts: Iterable[str]) -> AuditPolicy:
        """From `pattern=record` strings (flags, a policy file's lines)."""
        rules = []
        for text in texts:
            pattern, equals, record = text.strip().rpartition("=")
            if not equals:
                raise ValueError(f"audit rule {text!r}: write pattern=record")
            rules.append(AuditRule(pattern=pattern.strip(), record=record.strip()))
        return cls(rules=tuple(rules))

    @property
    def records_everything(self) -> bool:
        return all(rule.record == "all" for rule in self.rules)

    @cached_property
    def _decisions(self) -> dict[str, str]:
        return {}  # method → what its rule says; filled as methods are seen

    def record_for(self, full_method: str, *, remember: bool = True) -> str:
        """What the policy says of a method's calls (one of RECORDS). Without `remember`
        the answer is not kept: for names callers chose (methods the server does not
        describe), which must not grow a cache one name at a time."""
        decided = self._decisions.get(full_method)
        if decided is None:
            decided = next((r.record for r in self.rules if r.matches(full_method)), "all")
            if remember and len(self._decisions) < _MAX_DECISIONS:
                self._decisions[full_method] = decided
        return decided

    def individually(self, full_method: str, *, allowed: bool, remember: bool = True) -> bool:
        """Whether a call gets its own event (else it is counted in a summary)."""
        record = self.record_for(full_method, remember=remember)
        return record == "all" or record == ("allowed" if allowed else "denied")
