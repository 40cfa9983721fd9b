"""The detection rules on the node: evaluated over the spool as events arrive; each new
match becomes a `DetectionFinding` event in the findings log (an OCSF Detection
Finding in the ocsf-json format), exported like every other event, visible in
`ListEvents`/`TailEvents`, and counted in the metric `auditline.detections.findings`.

A plain rule's finding is made once per event; a correlation's when its condition is
met, at most once per group and timespan (a brute force going on is one finding a
day, its timespan, not one per poll or per event): `detection_correlation`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

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
    last_poll_seconds = 5.0  # how long the polls as it stops may take

    def __init__(
        self,
        spool: Spool,
        detector: Detector,
        *,
        node_id: str,
        interval: float,
        resume: Path | None = None,
    ) -> None:
        self.spool = spool
        self.detector = detector
        self.node_id = node_id
        self.interval = interval
        # Where it is, kept in `resume` after each poll: a restart goes on from there,
        # so the events of a run's last seconds are evaluated too (they were never:
        # an admin made just before a stop raised no finding; found by a review
        # helper). Without it, or with none kept, from the spool's end.
        self._resume = resume
        last = spool.store.last_seq
        kept = _read_seq(resume)
        self._after = last if kept is None else min(kept, last)
        self._window = DetectionWindow(detector)
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
        """Stop, after a last poll (call it before the spool closes)."""
        self._stop.set()
        self._thread.join(30)
        if not self._thread.is_alive():
            # Bounded: an engine far behind must not hold up the exporters' last
            # files; the next start goes on from its place.
            deadline = time.monotonic() + self.last_poll_seconds
            try:
                while self.poll() and time.monotonic() < deadline:
                    pass
            except Exception:  # the spool is closing: the next start goes on from here
                log.exception("detection's last poll failed")
        self._window.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # a bug must not stop detection for good: say so, go on
                log.exception("detection failed; retrying")

    def poll(self) -> int:
        """Evaluate what arrived since the last poll (a batch at most); return how many
        findings it made, or if none how many events it read (0: nothing new)."""
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
            self.spool.emit_documents([event_document(self._finding(detection))], wait=False)
            self._findings.add(1, {"rule": detection.title})
            made += 1
        self.findings += made
        _write_seq(self._resume, self._after)
        return made or len(new)

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


def _read_seq(path: Path | None) -> int | None:
    try:
        return int(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None


def _write_seq(path: Path | None, seq: int) -> None:
    if path is None:
        return
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(str(seq))
        os.replace(temporary, path)
    except OSError as error:  # a full disk: the next start re-reads a little more
        log.warning("detection's place could not be kept: %s", error.strerror)
