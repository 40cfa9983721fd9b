"""What `auditline verify` finds: each finding's kind, where, and the report per node."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["KINDS", "Finding", "NodeReport", "NotHere", "Report"]

KINDS = {
    "modified-file": "a file's bytes are not the ones its manifest lists",
    "deleted-file": "a file its manifest lists is not there",
    "missing-events": "events of the tree are in no file",
    "inserted-event": "a file holds an event its manifest does not list",
    "reordered-events": "a file's events are out of order",
    "duplicated-event": "an event appears more than once",
    "changed-events": "events do not hash to their signed root",
    "truncated-tail": "a checkpoint is past the last events found",
    "forged-checkpoint": "a trusted key's signature does not verify",
    "untrusted-checkpoint": "no trusted key signed a checkpoint",
    "inconsistent-checkpoints": "a checkpoint does not extend the one before it",
    "uncovered-file": "an event file no manifest names",
    "unexpected-object": "an object that is neither a file a manifest names nor a manifest "
    "or key (a reader of the folders may take it for events)",
    "foreign-manifest": "a manifest of another of the node's logs (another destination)",
    "conflicting-manifests": "two manifests of one batch disagree",
    "malformed-manifest": "a manifest that cannot be read",
    "unsigned-manifest": "a manifest whose contents its checkpoint's key did not sign",
    "unreadable-line": "a line that is not an event of its file's format",
    "deleted-object": "an object was deleted: a delete marker hides it (its first version "
    "was read)",
    "overwritten-object": "an object was written again with other bytes (its first version "
    "was read)",
    "missing-log": "a log an earlier verification saw (--expect) is not here",
    "rolled-back": "a log is shorter than the checkpoint an earlier verification saw "
    "(--expect): its tail was cut",
    "versions-unlisted": "the bucket's object versions could not be listed "
    "(s3:ListBucketVersions): an object a delete marker hides would go unseen",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finding:
    """One thing that is not as the signed checkpoints say."""

    kind: str
    node: str
    detail: str
    key: str = ""
    first_seq: int | None = None
    last_seq: int | None = None
    prefix: str = ""  # of the node's log it is in (one node may have several)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NotHere:
    """Events a log skips with the node's signed note that it goes on after them
    (`resume_text`): its exporter wrote them to another destination meanwhile, or
    they were passed while no exporter wrote here. Not a finding: verify the other
    destinations for them."""

    first_seq: int
    last_seq: int


@dataclasses.dataclass(kw_only=True)
class NodeReport:
    """What was proven of one node's log."""

    origin: str
    node: str
    prefix: str = ""  # of its exporter in the bucket (one log per node and prefix)
    first_seq: int = 0
    last_seq: int = 0
    tree_size: int = 0
    root: str = ""
    events: int = 0
    files: int = 0
    checkpoints: int = 0
    keys: list[str] = dataclasses.field(default_factory=list)
    dropped_before_logging: int = 0  # counted by DATA_LOSS markers
    not_here: list[NotHere] = dataclasses.field(default_factory=list)
    # The signed note of `tree_size`: keep it (the report's JSON) for `--expect`.
    checkpoint: str = ""


@dataclasses.dataclass(kw_only=True)
class Report:
    nodes: list[NodeReport]
    findings: list[Finding]
    seconds: float

    @property
    def ok(self) -> bool:
        return bool(self.nodes) and not self.findings

    @property
    def events(self) -> int:
        return sum(node.events for node in self.nodes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "nodes": [dataclasses.asdict(n) for n in self.nodes],
            "findings": [dataclasses.asdict(f) for f in self.findings],
        }
