"""The detection rules on the node: evaluated over the spool as events arrive; each new
match becomes a `DetectionFinding` event in the findings log (an OCSF Detection
Finding in the ocsf-json format), exported like every other event, visible in
`ListEvents`/`TailEvents`, and counted in the metric `auditline.detections.findings`.

A finding is made once per rule and first event: a correlation whose window keeps
growing (a brute force going on) is one finding, not one per poll.
"""

from __future__ import annotations

import logging
import threading
import time

from opentelemetry import metrics

from auditline.audit.v1 import event_pb2, options_pb2
from auditline.interceptor import Spool, event_document, ocsf_record
from auditline.server.detection import Detection, DetectionWindow, Detector
from auditline.server.detection_rules import FINDING_EVENT
from auditline.server.product_events import product_event

__all__ = ["FINDING_EVENT", "DetectionEngine"]

log = logging.getLogger("auditline.server")

_FINDINGS = "LOG_TYPE_FINDINGS"


class DetectionEngine:
    """A thread that reads new spooled events, runs the rules, and spools findings."""

    # The events the correlations look back over: their longest timespan (24 h), and
    # at most this many (each run's correlations read the whole window).
    window_seconds = 24 * 3600.0
    window_events = 50_000
    batch = 5_000  # events read from the spool at a time

    def __init__(self, spool: Spool, detector: Detector, *, node_id: str, interval: float) -> None:
        self.spool = spool
        self.detector = detector
        self.node_id = node_id
        self.interval = interval
        self._after = spool.store.last_seq  # earlier runs' events were evaluated then
        self._window = DetectionWindow(detector)
        self._reported: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="auditline-detect", daemon=True)
        self._findings = metrics.get_meter("auditline.server").create_counter(
            "auditline.detections.findings", description="detection findings made"
        )
        self.findings = 0

    def start(self) -> DetectionEngine:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._window.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # a bug must not stop detection for good: say so, go on
                log.exception("detection failed; retrying")

    def poll(self) -> int:
        """Evaluate what arrived since the last poll; return how many findings it made."""
        new = self.spool.store.read(self._after, limit=self.batch)
        if not new:
            return 0
        self._after = new[-1].seq
        since = self._window.last_rowid
        documents = [item.document() for item in new]
        self._window.add(ocsf_record(d) for d in documents if d.get("LogType") != _FINDINGS)
        self._window.forget_before(
            int((time.time() - self.window_seconds) * 1000), keep_at_most=self.window_events
        )
        made = 0
        for detection in self._window.detect(since_rowid=since):
            key = (detection.rule_id, min(detection.event_ids))
            if key in self._reported:
                continue
            self._reported.add(key)
            self.spool.emit_documents([event_document(self._finding(detection))], wait=False)
            self._findings.add(1, {"rule": detection.title})
            made += 1
        self.findings += made
        return made

    def _finding(self, detection: Detection) -> event_pb2.ApiEvent:
        return product_event(
            FINDING_EVENT,
            service="auditline.detections",
            activity=options_pb2.ACTIVITY_CREATE,
            log_type=event_pb2.LOG_TYPE_FINDINGS,
            node_id=self.node_id,
            account_name="auditline detections",
            params={
                "rule": {
                    "id": detection.rule_id,
                    "title": detection.title,
                    "level": detection.level,
                },
                "events": list(detection.event_ids),
            },
        )
