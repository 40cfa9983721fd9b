"""Which logs a spool keeps, and since when: switching a log off (account audit logs
disabled, say) must not drop the events of calls that came before the switch, even
when they reach the spool after it."""

from __future__ import annotations

import time

from auditline.interceptor._types import EventDocument

__all__ = ["LogGates"]


class LogGates:
    """Each switch as (since ns, `LogType` names kept or None for all), oldest first."""

    def __init__(self) -> None:
        self._gates: list[tuple[int, frozenset[str] | None]] = []

    def keep(self, log_types: frozenset[str] | None, since_ns: int | None = None) -> None:
        since = time.time_ns() if since_ns is None else since_ns
        # The last few switches are enough: no call outlives them all.
        self._gates = [g for g in self._gates[-8:] if g[0] < since] + [(since, log_types)]

    def wanted(self, item: EventDocument) -> bool:
        """Whether the log of `item` was kept when its call arrived."""
        if not self._gates:
            return True
        kept: frozenset[str] | None = None
        for since, log_types in self._gates:
            if since > item.at_ns:
                break
            kept = log_types
        return kept is None or item.document.get("LogType", "") in kept
