"""Verifying an exported log offline, with nothing but the signers' public keys.

For each node (the origin of its checkpoints) the manifests are taken in sequence
order. Each checkpoint must be signed by a trusted key; each manifest's frontier
must give the root of the checkpoint before it (the tree only grew); every file it
lists must be there with its SHA-256, and hold exactly the events it lists, in
order, once each; the leaves of those events (recomputed from the lines, in any
format) and of the events it names as left out must extend the frontier to the
checkpoint's root. Checkpoints past the last file (even idle ones) mean a cut tail;
files no manifest names are unproven. DATA_LOSS markers are counted: they are how
the node says it lost events before it could number them. Each manifest's contents
must be signed by its checkpoint's key (`manifest_note`), and have the shape
`_verify_shape` checks; manifests and their signed notes are read by the base class
(`_verify_manifests`), one batch by its base (`_verify_batch`).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from auditline.interceptor._compression import DATA_SUFFIXES
from auditline.interceptor._keys import integrity_prefix, partial, within
from auditline.interceptor._locations import Location
from auditline.interceptor._merkle import Frontier
from auditline.interceptor._note import VerifierKey
from auditline.interceptor._verify_batch import LogKey, SeenLine, SeenManifest
from auditline.interceptor._verify_expected import ExpectedCheckpoint, check_expected
from auditline.interceptor._verify_manifests import ManifestReading
from auditline.interceptor._verify_report import Finding, NodeReport, NotHere, Report

__all__ = ["Verifier"]


class Verifier(ManifestReading):
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
        expected: Sequence[ExpectedCheckpoint] = (),
    ) -> None:
        if expected and (since is not None or until is not None):
            raise ValueError("expected checkpoints are checked against whole logs, not a window")
        self.expected = list(expected)
        self.location = location
        self.keys = list(keys)
        self.since = since
        self.until = until
        self.progress = progress
        self.findings: list[Finding] = []
        # Per log (when `keep_leaves`), for proofs: its stretches of consecutive
        # batches (one, unless it resumes after events exported elsewhere), each the
        # tree before its first batch and every leaf after it.
        self.leaves: dict[LogKey, list[tuple[Frontier, list[bytes]]]] = {}
        # Event id: its lines as read (one per log that has it), for proofs.
        self.lines: dict[str, list[SeenLine]] = {}
        # Per log, the signed note of each tree size the files prove, and the tree's base.
        self.notes: dict[LogKey, dict[int, str]] = {}
        self.bases: dict[LogKey, int] = {}
        self._log: LogKey = ("", "")
        self._keep = keep_leaves
        self._events = 0
        self._dropped = 0

    def run(self) -> Report:
        started = time.perf_counter()
        keys = list(self.location.list_keys())
        for change in getattr(self.location, "changes", list)():  # an S3 bucket's
            self._find(change.kind, "", "", key=change.key)
        manifests: dict[LogKey, list[SeenManifest]] = {}
        for key in keys:
            prefix = integrity_prefix(key, manifests=True)
            if prefix is not None:
                manifest = self._manifest(key)
                if manifest is not None:
                    # One log per node and destination: exporters of one node under
                    # other prefixes of the bucket (a findings log beside the rest)
                    # cut their own batches, and each is proven on its own.
                    node = manifest.document["node"]
                    manifests.setdefault((node, prefix), []).append(manifest)
        named: set[str] = set()
        nodes = []
        for (node, prefix), found in sorted(manifests.items()):
            report = self._node(node, prefix, found, named)
            if report is not None:
                nodes.append(report)
        self._log = ("", "")  # the findings below are of no log
        check_expected(self.expected, nodes, self.notes, self.keys, self._find)
        if self.since is None and self.until is None:
            # Every other object too: readers of the folders (a SIEM's, a table over
            # them) take files of any name for events (found by a review helper).
            for key in keys:
                if key in named or integrity_prefix(key) is not None or partial(key):
                    continue
                if key.endswith(DATA_SUFFIXES):
                    node = key.rsplit("/", 1)[-1].split("-")[0]
                    self._find("uncovered-file", node, "", key=key)
                else:
                    self._find("unexpected-object", "", "", key=key)
        return Report(nodes=nodes, findings=self.findings, seconds=time.perf_counter() - started)

    def _wanted(self, manifest: SeenManifest) -> bool:
        if self.since is not None and manifest.created < self.since:
            return False
        return self.until is None or manifest.created <= self.until

    # --- one node ----------------------------------------------------------------------

    def _node(
        self, node: str, prefix: str, manifests: list[SeenManifest], named: set[str]
    ) -> NodeReport | None:
        """The log's report; None if none of its batches is in the window (a log
        whose batches all fall outside it is no more proven than one not found)."""
        first = manifests[0].document
        report = NodeReport(origin=first["origin"], node=node, prefix=prefix)
        self._log = log = (node, prefix)
        # Where the tree began (numbered events before it are in no tree): from the
        # first batch, whose frontier its checkpoint proves, else a signed manifest's.
        signed_first = next((m.document for m in manifests if m.checkpoint is not None), first)
        base = int(signed_first.get("tree_base", 0))
        batches = self._one_per_batch(node, manifests)
        for manifest in batches:
            named.update(within(f["key"], prefix) for f in manifest.document.get("files", []))
        batches = [m for m in batches if self._wanted(m)]
        if not batches and (self.since is not None or self.until is not None):
            return None
        proven: dict[int, bytes] = {0: Frontier().root()}  # tree sizes the files prove
        signed: tuple[int, bytes] | None = None  # the checkpoint before this manifest
        stretches: list[tuple[Frontier, list[bytes]]] = []  # for proofs
        for index, manifest in enumerate(batches):
            span = {"first_seq": manifest.first_seq, "last_seq": manifest.last_seq}
            before = self._frontier(node, manifest)
            if before is None:
                continue
            log_id = manifest.document.get("log")
            before_id = batches[index - 1].document.get("log") if index else None
            goes_on = signed is not None and (before.size, before.root()) == signed
            begun_again = goes_on and self._starts_log(manifest)
            if index and log_id and before_id and log_id != before_id and not begun_again:
                # Copied from another destination's log of the node: its checkpoints
                # and notes are genuine, and fit here too. (A log begun again here, the
                # destination reached by another path or emptied, goes straight on from
                # the checkpoint before, with the node's note that it begins. Going on
                # was not enough: two logs cut at the same events fit each other, and a
                # manifest of one that leaves a log type out hid that type's files of
                # the other, found by a review helper.)
                self._find("foreign-manifest", node, "", key=manifest.key, **span)
            resumed = (
                index > 0
                and log_id is not None
                and log_id == before_id
                and self._resumes(manifest, signed)
            )
            if index == 0 or resumed:
                stretches.append((before.copy(), []))
            if index == 0:
                report.first_seq = manifest.first_seq
                base = manifest.first_seq - before.size - 1
                # The log begins with the tree (an empty frontier), unless the node
                # signed that this exporter's log begins later.
                if before.size and self.since is None and not self._starts_log(manifest):
                    self._find(
                        "missing-events",
                        node,
                        "the log's first manifest is missing",
                        first_seq=base + 1,
                        last_seq=manifest.first_seq - 1,
                    )
            elif resumed:
                # The node signed that its log here goes on after them (they went
                # to another destination meanwhile): said, not found.
                report.not_here.append(
                    NotHere(
                        first_seq=batches[index - 1].last_seq + 1,
                        last_seq=manifest.first_seq - 1,
                    )
                )
            elif manifest.first_seq > batches[index - 1].last_seq + 1:
                self._find(
                    "missing-events",
                    node,
                    "no manifest covers these events",
                    first_seq=batches[index - 1].last_seq + 1,
                    last_seq=manifest.first_seq - 1,
                )
            if signed is not None and (before.size, before.root()) != signed and not resumed:
                self._find("inconsistent-checkpoints", node, "", key=manifest.key, **span)
            batch = self._batch(node, manifest)
            tree = before.copy()
            complete = all(seq in batch for seq in range(manifest.first_seq, manifest.last_seq + 1))
            if complete:
                batch_leaves = [batch[s] for s in range(manifest.first_seq, manifest.last_seq + 1)]
                tree.extend(batch_leaves)
                start, leaves = stretches[-1] if stretches else (Frontier(), [])
                if self._keep and start.size + len(leaves) == before.size:
                    leaves.extend(batch_leaves)
            checkpoint = manifest.checkpoint
            if checkpoint is not None:
                signed = (checkpoint.size, checkpoint.root)
                if complete and (checkpoint.size, checkpoint.root) != (tree.size, tree.root()):
                    self._find("changed-events", node, "", key=manifest.key, **span)
                elif complete:
                    proven[tree.size] = tree.root()
                    self.notes.setdefault(log, {})[tree.size] = manifest.document["checkpoint"]
                    report.checkpoints += 1
                    report.keys = sorted({*report.keys, manifest.document.get("_signer", "")})
                    report.tree_size, report.root = (
                        tree.size,
                        base64.b64encode(tree.root()).decode(),
                    )
            report.last_seq = manifest.last_seq
            report.files += len(manifest.document.get("files", []))
        self._tail(node, manifests, proven, base, report.not_here)
        if self._keep:
            self.leaves[log] = stretches or [(Frontier(), [])]
        self.bases[log] = base
        report.checkpoint = self.notes.get(log, {}).get(report.tree_size, "")
        report.events, report.dropped_before_logging = self._events, self._dropped
        self._events = self._dropped = 0
        return report

    def _one_per_batch(self, node: str, manifests: list[SeenManifest]) -> list[SeenManifest]:
        """The batches in order, one manifest each. Several of one batch must agree
        (a batch redone with a rotated key is signed again the same): one of another
        log of the node, copied beside, hid a file of this one deleted."""
        chosen: dict[tuple[int, int], SeenManifest] = {}
        for manifest in manifests:
            if manifest.last_seq < manifest.first_seq:
                continue  # an idle checkpoint
            span = (manifest.first_seq, manifest.last_seq)
            other = chosen.setdefault(span, manifest)
            if other is not manifest and _substance(other) != _substance(manifest):
                self._find(
                    "conflicting-manifests",
                    node,
                    "",
                    key=manifest.key,
                    first_seq=span[0],
                    last_seq=span[1],
                )
        return sorted(chosen.values(), key=lambda m: m.first_seq)

    def _frontier(self, node: str, manifest: SeenManifest) -> Frontier | None:
        try:
            frontier = manifest.document["frontier"]
            hashes = [base64.b64decode(h, validate=True) for h in frontier["hashes"]]
            return Frontier(int(frontier["size"]), hashes)
        except (KeyError, TypeError, ValueError, binascii.Error):
            self._find("malformed-manifest", node, "its frontier cannot be read", key=manifest.key)
            return None

    def _tail(
        self,
        node: str,
        manifests: list[SeenManifest],
        roots: dict[int, bytes],
        base: int,
        gaps: list[NotHere],
    ) -> None:
        """Every checkpoint (idle ones too) must be of a tree the files prove; the
        largest one past them says how much of the tail is not. And none may be of a
        tree size this log says it skipped (`gaps`): one is proof that the log here
        once held those events."""
        proven = max(roots)
        past = None
        for manifest in manifests:
            checkpoint = manifest.checkpoint
            if checkpoint is None or not self._wanted(manifest):
                continue
            seq = base + checkpoint.size
            if any(gap.first_seq <= seq <= gap.last_seq for gap in gaps):
                self._find(
                    "inconsistent-checkpoints",
                    node,
                    "a checkpoint of events the log says are not here",
                    key=manifest.key,
                )
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


def _substance(manifest: SeenManifest) -> tuple[Any, ...]:
    """What a batch's manifest says, apart from its signatures."""
    document = manifest.document
    checkpoint = manifest.checkpoint
    signed = (checkpoint.size, checkpoint.root) if checkpoint is not None else None
    return (
        document.get("log"),
        orjson.dumps(document.get("files"), option=orjson.OPT_SORT_KEYS),
        orjson.dumps(document.get("omitted")),
        orjson.dumps(document.get("frontier"), option=orjson.OPT_SORT_KEYS),
        signed,
    )
