"""Counting events that could not be kept, and the `AuditEventsDropped` marker saying so.

Nothing is dropped silently: every loss is counted here, by reason, with the time
of the first and the last, and the count becomes a marker event (status
DATA_LOSS) in the log itself as soon as the spool can write one.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid

from auditline.audit.v1 import event_pb2, options_pb2
from auditline.interceptor._formats import apievent_dict
from auditline.interceptor._types import EventDocument

__all__ = ["LossCounter", "Losses"]

log = logging.getLogger("auditline.interceptor")

MARKER_NAME = "AuditEventsDropped"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Losses:
    """Events lost between two times, by reason."""

    count: int
    first_ns: int
    last_ns: int
    reasons: dict[str, int]
    # The number of the last loss report counted (`LossCounter.add`), in this count or
    # an earlier one: kept with it, so that a report sent again is not counted twice.
    reports: int = 0

    def marker(self) -> EventDocument:
        """The `AuditEventsDropped` event of these losses (status DATA_LOSS)."""
        event = event_pb2.ApiEvent(
            event_name=MARKER_NAME,
            event_id=str(uuid.uuid4()),  # like every event: findings and proofs name it
            version="2",
            service="auditline.audit.v1",
            method=MARKER_NAME,
            activity=options_pb2.ACTIVITY_OTHER,
            log_type=event_pb2.LOG_TYPE_SETTINGS,
        )
        event.request.request_time.FromNanoseconds(self.first_ns)
        event.request.request_params.update(
            {"dropped_events": self.count, "reasons": dict(self.reasons)}
        )
        event.response.response_time.FromNanoseconds(self.last_ns)
        event.response.response_code = 15  # DATA_LOSS
        event.response.response_status = "DATA_LOSS"
        why = ", ".join(f"{count} {reason}" for reason, count in sorted(self.reasons.items()))
        event.response.response_error = f"{self.count} audit events were dropped ({why})"
        event.response.response_body.SetInParent()
        return EventDocument(
            document=apievent_dict(event), at_ns=self.first_ns, end_ns=self.last_ns
        )


class LossCounter:
    """Losses since the last marker was written. Not thread-safe: the owner locks."""

    def __init__(self, saved: Losses | None = None) -> None:
        """`saved`: losses an earlier run counted and could not yet tell of."""
        self._count = 0
        self._first = self._last = 0
        self._reasons: dict[str, int] = {}
        self.total = 0
        self.version = 0  # changes whenever the pending losses do
        # The last loss report counted, and the last the spool file has counted (saved
        # or in a marker): an audit worker's serving process sends a report again
        # until it is kept, and a report kept already is not counted again.
        self.reports = self.reports_kept = saved.reports if saved is not None else 0
        if saved is not None:
            self._count = saved.count
            self._first, self._last = saved.first_ns, saved.last_ns
            self._reasons = dict(saved.reasons)

    def add(self, count: int, reason: str, at_ns: int, *, report: int = 0) -> bool:
        """Count losses; whether they were. `report`: the number of the report that
        tells of them (from 1 up, in order), if one does: one counted is not again."""
        if count <= 0 or (report and report <= self.reports):
            return False
        self.reports = max(self.reports, report)
        self.version += 1
        if not self._count:
            self._first = at_ns
            log.error("audit events are being dropped: %s", reason)
        self._count += count
        self._last = max(self._last, at_ns)
        self._reasons[reason] = self._reasons.get(reason, 0) + count
        self.total += count
        return True

    def pending(self) -> Losses | None:
        """The losses not yet in a written marker, or None."""
        if not self._count:
            return None
        return Losses(
            count=self._count,
            first_ns=self._first,
            last_ns=self._last,
            reasons=dict(self._reasons),
            reports=self.reports,
        )

    def kept(self, losses: Losses) -> None:
        """The spool file now has these losses (saved, or in a marker)."""
        self.reports_kept = max(self.reports_kept, losses.reports)

    def settle(self, written: Losses) -> None:
        """Forget the losses a marker now in the spool accounts for."""
        self.kept(written)
        self.version += 1
        self._count -= written.count
        for reason, count in written.reasons.items():
            left = self._reasons.get(reason, 0) - count
            if left > 0:
                self._reasons[reason] = left
            else:
                self._reasons.pop(reason, None)
        if self._count:
            self._first = written.last_ns
        else:
            self._first = self._last = 0
        log.error("%d audit events were dropped; the log says so (%s)", written.count, MARKER_NAME)
