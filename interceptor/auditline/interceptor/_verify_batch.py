"""Reading one batch for `auditline verify`: the leaf of each event its files and its
manifest give, and what is wrong with them (files deleted or changed, events missing,
inserted, out of order or twice). `Verifier`'s base class; its state is the
verifier's."""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime
import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from auditline.interceptor._compression import decompress
from auditline.interceptor._keys import within
from auditline.interceptor._leaf import LineError, event_leaf, read_line, record_time
from auditline.interceptor._locations import Location
from auditline.interceptor._losses import MARKER_NAME
from auditline.interceptor._note import Checkpoint
from auditline.interceptor._verify_report import KINDS, Finding

__all__ = ["BatchReading", "LogKey", "SeenLine", "SeenManifest"]

# A log: a node's events an exporter writes under one prefix of the bucket.
LogKey = tuple[str, str]  # (node, prefix)


def _expand(runs: Sequence[Sequence[int]]) -> list[int]:
    return [seq for first, last in runs for seq in range(first, last + 1)]


@dataclasses.dataclass(kw_only=True)
class SeenManifest:
    """A manifest as read: its document, and its checkpoint when a trusted key signed
    it and its contents (else None)."""

    key: str
    document: dict[str, Any]
    checkpoint: Checkpoint | None
    created: datetime.datetime

    @property
    def first_seq(self) -> int:
        return int(self.document["first_seq"])

    @property
    def last_seq(self) -> int:
        return int(self.document["last_seq"])


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeenLine:
    """An event's line as read from its file, kept for proofs."""

    log: LogKey
    seq: int
    format: str
    line: bytes
    key: str  # the file's


class BatchReading:
    """The state below is the verifier's, set in its constructor."""

    location: Location
    findings: list[Finding]
    progress: Callable[[int], None]
    lines: dict[str, list[SeenLine]]  # an event's lines, in every log that has it
    _log: LogKey  # the log being read
    _keep: bool
    _events: int
    _dropped: int

    def _find(self, kind: str, node: str, detail: str, **where: Any) -> None:
        prefix = self._log[1] if node and node == self._log[0] else ""
        self.findings.append(
            Finding(kind=kind, node=node, detail=detail or KINDS[kind], prefix=prefix, **where)
        )

    def _batch(self, node: str, manifest: SeenManifest) -> dict[int, bytes]:
        """The leaf of each event the batch's files and manifest give, by sequence."""
        leaves: dict[int, bytes] = {}
        span = dict(first_seq=manifest.first_seq, last_seq=manifest.last_seq)
        listed_anywhere: set[int] = set()
        for entry in manifest.document.get("files", []):
            listed = _expand(entry["seqs"])
            listed_anywhere.update(listed)
            order = self._file(node, entry, leaves)
            if order is None:
                continue
            if order != sorted(order):
                self._find("reordered-events", node, "", key=entry["key"], **span)
            seen = [seq for _, seq in order]
            extra = sorted(set(seen) - set(listed))
            if extra:
                self._find(
                    "inserted-event",
                    node,
                    f"events {extra[:5]} are not listed",
                    key=entry["key"],
                    first_seq=extra[0],
                    last_seq=extra[-1],
                )
            missing = sorted(set(listed) - set(seen))
            if missing:
                self._find(
                    "missing-events",
                    node,
                    f"{len(missing)} listed events are not there",
                    key=entry["key"],
                    first_seq=missing[0],
                    last_seq=missing[-1],
                )
        for seq, leaf in manifest.document.get("omitted", []):
            if int(seq) not in listed_anywhere:
                try:
                    leaves.setdefault(int(seq), base64.b64decode(leaf, validate=True))
                except binascii.Error:
                    self._find("malformed-manifest", node, "a left-out leaf", key=manifest.key)
        first, last = manifest.first_seq, manifest.last_seq
        outside = sorted(seq for seq in leaves if not first <= seq <= last)
        if outside:  # read and counted, but in no tree
            self._find(
                "inserted-event",
                node,
                f"events {outside[:5]} are outside the batch",
                key=manifest.key,
                first_seq=outside[0],
                last_seq=outside[-1],
            )
        present = listed_anywhere | leaves.keys()
        nowhere = [seq for seq in range(first, last + 1) if seq not in present]
        if nowhere:
            self._find(
                "missing-events",
                node,
                f"{len(nowhere)} events of the batch are in none of its files",
                key=manifest.key,
                first_seq=nowhere[0],
                last_seq=nowhere[-1],
            )
        return leaves

    def _file(
        self, node: str, entry: dict[str, Any], leaves: dict[int, bytes]
    ) -> list[tuple[int, int]] | None:
        """The file's events' order keys as read: (0, sequence), or for Parquet, whose
        rows are sorted by time, (time in ms, sequence)."""
        key = within(entry["key"], self._log[1])  # as this location sees it
        data = self.location.read(key)
        if data is None:
            self._find("deleted-file", node, "", key=key)
            return None
        if hashlib.sha256(data).hexdigest() != entry["sha256"] or len(data) != entry["bytes"]:
            self._find("modified-file", node, "", key=key)
        try:
            text = decompress(key, data)
        except Exception as exc:  # any decompressor's error: the file is damaged
            self._find(
                "modified-file", node, f"cannot be decompressed ({type(exc).__name__})", key=key
            )
            return None
        seen: list[tuple[int, int]] = []
        by_time = entry["format"] == "ocsf-parquet"
        for number, line in enumerate(_lines(text), 1):
            try:
                document = read_line(entry["format"], line)
                seq = int(document["Sequence"])
            except (LineError, KeyError, ValueError, TypeError, AttributeError) as exc:
                self._find("unreadable-line", node, f"line {number}: {exc}", key=key)
                continue
            if seq in leaves:
                self._find(
                    "duplicated-event",
                    node,
                    f"event {seq} again",
                    key=key,
                    first_seq=seq,
                    last_seq=seq,
                )
                continue
            leaves[seq] = event_leaf(document)
            seen.append((record_time(document) if by_time else 0, seq))
            self._count(document)
            if self._keep:
                self.lines.setdefault(document.get("EventId", ""), []).append(
                    SeenLine(log=self._log, seq=seq, format=entry["format"], line=line, key=key)
                )
        return seen

    def _count(self, document: dict[str, Any]) -> None:
        self._events += 1
        if document.get("EventName") == MARKER_NAME:
            # A marker without a count it can read is counted as an event, not a loss.
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self._dropped += int(document["Request"]["RequestParams"]["dropped_events"])
        if self._events % 10_000 == 0:
            self.progress(self._events)


def _lines(text: bytes) -> Iterator[bytes]:
    for line in text.split(b"\n"):
        if line.strip():
            yield line
