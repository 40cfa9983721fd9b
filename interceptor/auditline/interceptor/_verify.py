"""Verifying an exported log offline, with nothing but the signers' public keys.

For each node (the origin of its checkpoints) the manifests are taken in sequence
order. Each checkpoint must be signed by a trusted key; each manifest's frontier
must give the root of the checkpoint before it (the tree only grew); every file it
lists must be there with its SHA-256, and hold exactly the events it lists, in
order, once each; the leaves of those events (recomputed from the lines, in any
format) and of the events it names as left out must extend the frontier to the
checkpoint's root. Checkpoints past the last file (even idle ones) mean a cut tail;
files no manifest names are unproven. DATA_LOSS markers are counted: they are how
the node says it lost events before it could number them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson

from auditline.interceptor._compression import DATA_SUFFIXES, decompress
from auditline.interceptor._integrity import start_text
from auditline.interceptor._leaf import LineError, event_leaf, read_line, record_time
from auditline.interceptor._locations import Location
from auditline.interceptor._losses import MARKER_NAME
from auditline.interceptor._merkle import Frontier
from auditline.interceptor._note import Checkpoint, NoteError, VerifierKey, open_note
from auditline.interceptor._verify_report import KINDS, Finding, NodeReport, Report

__all__ = ["Verifier"]


def _expand(runs: Sequence[Sequence[int]]) -> list[int]:
    return [seq for first, last in runs for seq in range(first, last + 1)]


@dataclasses.dataclass(kw_only=True)
class _Manifest:
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


class Verifier:
    """Checks every node's log in `location` against the trusted `keys`."""

    def __init__(
        self,
        location: Location,
        keys: Sequence[VerifierKey],
        *,
        since: datetime.datetime | None = None,
        until: datetime.datetime | None = None,
        progress: Callable[[int], None] = lambda events: None,
        keep_leaves: bool = False,
    ) -> None:
        self.location = location
        self.keys = list(keys)
        self.since = since
        self.until = until
        self.progress = progress
        self.findings: list[Finding] = []
        # Per node, every leaf from the start of its tree (when `keep_leaves`): proofs.
        self.leaves: dict[str, list[bytes]] = {}
        self.lines: dict[str, tuple[str, int, str, bytes]] = {}  # event id: node, seq, format, line
        # Per node, the signed note of each tree size the files prove, and the tree's base.
        self.notes: dict[str, dict[int, str]] = {}
        self.bases: dict[str, int] = {}
        self._keep = keep_leaves
        self._events = 0
        self._dropped = 0

    def run(self) -> Report:
        started = time.perf_counter()
        keys = list(self.location.list_keys())
        manifests: dict[str, list[_Manifest]] = {}
        for key in keys:
            if "/manifests/" in key and "integrity/" in key and key.endswith(".json"):
                manifest = self._manifest(key)
                if manifest is not None:
                    manifests.setdefault(manifest.document["node"], []).append(manifest)
        named: set[str] = set()
        nodes = []
        for node, found in sorted(manifests.items()):
            nodes.append(self._node(node, found, named))
        if self.since is None and self.until is None:
            for key in keys:
                if key.endswith(DATA_SUFFIXES) and "integrity/" not in key and key not in named:
                    node = key.rsplit("/", 1)[-1].split("-")[0]
                    self._find("uncovered-file", node, "", key=key)
        return Report(nodes=nodes, findings=self.findings, seconds=time.perf_counter() - started)

    def _find(self, kind: str, node: str, detail: str, **where: Any) -> None:
        self.findings.append(Finding(kind=kind, node=node, detail=detail or KINDS[kind], **where))

    # --- manifests ---------------------------------------------------------------------

    def _manifest(self, key: str) -> _Manifest | None:
        try:
            document = orjson.loads(self.location.read(key) or b"")
            note = document["checkpoint"]
            created = datetime.datetime.fromisoformat(document["created"])
            node = document["node"]
            int(document["first_seq"]), int(document["last_seq"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self._find("malformed-manifest", "", "", key=key)
            return None
        checkpoint = None
        try:
            opened = open_note(note, self.keys)
            text, signer = opened.text, opened.signer
            checkpoint = Checkpoint.parse(text)
        except NoteError as exc:
            kind = {"forged": "forged-checkpoint", "untrusted": "untrusted-checkpoint"}.get(
                exc.kind, "malformed-manifest"
            )
            self._find(kind, node, str(exc), key=key)
        else:
            if checkpoint.origin != document.get("origin"):
                self._find("forged-checkpoint", node, "the checkpoint names another log", key=key)
                checkpoint = None
            document["_signer"] = f"{signer.name}+{signer.key_id:08x}"
        return _Manifest(key=key, document=document, checkpoint=checkpoint, created=created)

    def _starts_log(self, manifest: _Manifest) -> bool:
        """Whether the manifest carries the signed note, by the key that signed its
        checkpoint, that its exporter's log begins at its first event (`start_text`)."""
        note = manifest.document.get("exporter_start")
        if not isinstance(note, str) or manifest.checkpoint is None:
            return False
        try:
            opened = open_note(note, self.keys)
        except NoteError:
            return False
        document = manifest.document
        signer = f"{opened.signer.name}+{opened.signer.key_id:08x}"
        return signer == document.get("_signer") and opened.text == start_text(
            origin=str(document.get("origin")),
            exporter=str(document.get("exporter")),
            first_seq=manifest.first_seq,
        )

    def _wanted(self, manifest: _Manifest) -> bool:
        if self.since is not None and manifest.created < self.since:
            return False
        return self.until is None or manifest.created <= self.until

    # --- one node ----------------------------------------------------------------------

    def _node(self, node: str, manifests: list[_Manifest], named: set[str]) -> NodeReport:
        first = manifests[0].document
        report = NodeReport(origin=first["origin"], node=node)
        base = int(first.get("tree_base", 0))
        batches = sorted(
            {(m.first_seq, m.last_seq): m for m in manifests if m.last_seq >= m.first_seq}.values(),
            key=lambda m: m.first_seq,
        )
        for manifest in batches:
            named.update(f["key"] for f in manifest.document.get("files", []))
        batches = [m for m in batches if self._wanted(m)]
        proven: dict[int, bytes] = {0: Frontier().root()}  # tree sizes the files prove
        signed: tuple[int, bytes] | None = None  # the checkpoint before this manifest
        leaves: list[bytes] = []
        for index, manifest in enumerate(batches):
            span = {"first_seq": manifest.first_seq, "last_seq": manifest.last_seq}
            before = self._frontier(node, manifest)
            if before is None:
                continue
            if index == 0:
                report.first_seq = manifest.first_seq
                if (
                    manifest.first_seq != base + 1
                    and self.since is None
                    and not self._starts_log(manifest)
                ):
                    self._find(
                        "missing-events",
                        node,
                        "the log's first manifest is missing",
                        first_seq=base + 1,
                        last_seq=manifest.first_seq - 1,
                    )
            elif manifest.first_seq > batches[index - 1].last_seq + 1:
                self._find(
                    "missing-events",
                    node,
                    "no manifest covers these events",
                    first_seq=batches[index - 1].last_seq + 1,
                    last_seq=manifest.first_seq - 1,
                )
            if signed is not None and (before.size, before.root()) != signed:
                self._find("inconsistent-checkpoints", node, "", key=manifest.key, **span)
            batch = self._batch(node, manifest)
            tree = before.copy()
            complete = all(seq in batch for seq in range(manifest.first_seq, manifest.last_seq + 1))
            if complete:
                batch_leaves = [batch[s] for s in range(manifest.first_seq, manifest.last_seq + 1)]
                tree.extend(batch_leaves)
                if self._keep and len(leaves) == before.size:
                    leaves.extend(batch_leaves)
            checkpoint = manifest.checkpoint
            if checkpoint is not None:
                signed = (checkpoint.size, checkpoint.root)
                if complete and (checkpoint.size, checkpoint.root) != (tree.size, tree.root()):
                    self._find("changed-events", node, "", key=manifest.key, **span)
                elif complete:
                    proven[tree.size] = tree.root()
                    self.notes.setdefault(node, {})[tree.size] = manifest.document["checkpoint"]
                    report.checkpoints += 1
                    report.keys = sorted({*report.keys, manifest.document.get("_signer", "")})
                    report.tree_size, report.root = (
                        tree.size,
                        base64.b64encode(tree.root()).decode(),
                    )
            report.last_seq = manifest.last_seq
            report.files += len(manifest.document.get("files", []))
        self._tail(node, manifests, proven, base)
        if self._keep:
            self.leaves[node] = leaves
        self.bases[node] = base
        report.events, report.dropped_before_logging = self._events, self._dropped
        self._events = self._dropped = 0
        return report

    def _frontier(self, node: str, manifest: _Manifest) -> Frontier | None:
        try:
            frontier = manifest.document["frontier"]
            hashes = [base64.b64decode(h, validate=True) for h in frontier["hashes"]]
            return Frontier(int(frontier["size"]), hashes)
        except (KeyError, TypeError, ValueError, binascii.Error):
            self._find("malformed-manifest", node, "its frontier cannot be read", key=manifest.key)
            return None

    def _tail(
        self, node: str, manifests: list[_Manifest], roots: dict[int, bytes], base: int
    ) -> None:
        """Every checkpoint (idle ones too) must be of a tree the files prove; the
        largest one past them says how much of the tail is not."""
        proven = max(roots)
        past = None
        for manifest in manifests:
            checkpoint = manifest.checkpoint
            if checkpoint is None or not self._wanted(manifest):
                continue
            if checkpoint.size > proven:
                if past is None or checkpoint.size > past[1].size:
                    past = (manifest, checkpoint)
            elif checkpoint.size in roots and roots[checkpoint.size] != checkpoint.root:
                self._find(
                    "inconsistent-checkpoints",
                    node,
                    "an idle checkpoint disagrees",
                    key=manifest.key,
                )
        if past is not None:
            self._find(
                "truncated-tail",
                node,
                "",
                key=past[0].key,
                first_seq=base + proven + 1,
                last_seq=base + past[1].size,
            )

    # --- one batch ---------------------------------------------------------------------

    def _batch(self, node: str, manifest: _Manifest) -> dict[int, bytes]:
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
                leaves.setdefault(int(seq), base64.b64decode(leaf))
        return leaves

    def _file(
        self, node: str, entry: dict[str, Any], leaves: dict[int, bytes]
    ) -> list[tuple[int, int]] | None:
        """The file's events' order keys as read: (0, sequence), or for Parquet, whose
        rows are sorted by time, (time in ms, sequence)."""
        key = entry["key"]
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
            except (LineError, KeyError, ValueError) as exc:
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
                self.lines[document.get("EventId", "")] = (node, seq, entry["format"], line)
        return seen

    def _count(self, document: dict[str, Any]) -> None:
        self._events += 1
        if document.get("EventName") == MARKER_NAME:
            self._dropped += int(document["Request"]["RequestParams"].get("dropped_events", 0))
        if self._events % 10_000 == 0:
            self.progress(self._events)


def _lines(text: bytes) -> Iterator[bytes]:
    for line in text.split(b"\n"):
        if line.strip():
            yield line
