"""What an exporter writes beside its files so that the log can be proven: a manifest
with a signed checkpoint for every batch, and one at least every hour when idle.

A manifest (JSON, `integrity/<node>/manifests/<first>-<last>-<key id>.json` under
the exporter's prefix) names the node's tree as it stood before the batch (its
frontier), each file of the batch (key, SHA-256, size, format, compression, log
type, the events in it), the leaf hashes of the batch's events that this exporter
does not write (log types it leaves out), and the checkpoint of the tree after the
batch, signed by the node's key (c2sp.org/tlog-checkpoint). The frontier of each
manifest must give the root of the one before: the checkpoints extend each other.
The verifier key is published at `integrity/keys/<key id>.pub`. An exporter's first
manifest also carries a signed note that its log begins there (`start_text`), for a
verifier to tell an exporter made later from a log whose head was cut; and a manifest
after events exported elsewhere (the exporter wrote to another destination meanwhile)
one that the log goes on there after its last checkpoint (`resume_text`).

The manifest's own contents are signed too (`manifest_note`: the SHA-256 of the rest
of it, `manifest_digest`): the checkpoint alone proves the events' hashes, not which
files hold them, where the tree began, nor which events the exporter left out, and
each of those could otherwise be rewritten, or a copy of a manifest added, to hide a
cut head, a batch or an event, or to slip in a forged one.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from auditline.interceptor._merkle import Frontier
from auditline.interceptor._note import Checkpoint, SigningKey

__all__ = [
    "MANIFEST_FORMAT",
    "RESUME_FORMAT",
    "START_FORMAT",
    "FileEntry",
    "Notary",
    "manifest_digest",
    "manifest_note_text",
    "resume_text",
    "runs",
    "start_text",
]

# /2: the manifest's contents are signed (`manifest_note`); /1 (until 2026-12-07)
# signed only its checkpoint.
MANIFEST_FORMAT = "auditline-manifest/2"
START_FORMAT = "auditline-exporter-start/1"
RESUME_FORMAT = "auditline-exporter-resume/1"
MANIFEST_NOTE_FORMAT = "auditline-manifest-digest/1"


def start_text(*, origin: str, exporter: str, first_seq: int) -> str:
    """The text of the signed note that says an exporter's log begins at `first_seq`:
    it was made when the node's earlier events had left the spool (created later, or
    after they were freed), so its destination holds none before. Signed, so that a
    destination whose first manifests were deleted cannot pass for one that began
    later; bound to the log, the exporter and the number, so that it fits no other
    manifest."""
    return f"{START_FORMAT}\n{origin}\nexporter {exporter}\nfirst {first_seq}\n"


def resume_text(*, origin: str, exporter: str, after: Checkpoint, first_seq: int) -> str:
    """The text of the signed note that says this node's log at a destination goes on
    at `first_seq` after the checkpoint `after` it ended with there: the events
    between were exported elsewhere (the exporter wrote to another destination
    meanwhile, or events were freed before an exporter came back). Bound to that
    checkpoint, so that it fits only the manifest that follows the one signed
    there: deleting batches before it still shows."""
    return (
        f"{RESUME_FORMAT}\n{origin}\nexporter {exporter}\n"
        f"after {after.size} {_b64(after.root)}\nfirst {first_seq}\n"
    )


def manifest_digest(document: Mapping[str, Any]) -> bytes:
    """The SHA-256 of a manifest's canonical JSON (keys sorted, no spaces) without its
    `manifest_note`, the checkpoint and the start note included: what that note signs.
    The same from the document as written or as parsed again."""
    body = {key: value for key, value in document.items() if key != "manifest_note"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()


def manifest_note_text(*, origin: str, digest: bytes) -> str:
    """The text of the signed note over a manifest's contents, bound to its log."""
    return f"{MANIFEST_NOTE_FORMAT}\n{origin}\nsha256 {_b64(digest)}\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def runs(seqs: Iterable[int]) -> list[list[int]]:
    """Ascending numbers as [first, last] runs."""
    out: list[list[int]] = []
    for seq in seqs:
        if out and out[-1][1] == seq - 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileEntry:
    """One file of a batch, as its manifest lists it."""

    key: str
    sha256: str
    bytes: int
    format: str
    compression: str
    log_type: str
    seqs: list[list[int]]  # the events in it, as [first, last] runs


@dataclasses.dataclass(frozen=True, kw_only=True)
class IntegrityObject:
    """An object the exporter writes beside its files: a key, or a manifest."""

    key: str
    body: bytes


@dataclasses.dataclass(frozen=True, kw_only=True)
class Notary:
    """Signs a node's checkpoints: its key, and the log's origin (deployment/node)."""

    key: SigningKey
    origin: str
    node_id: str

    def key_object(self, prefix: str) -> IntegrityObject:
        """The published verifier key."""
        return IntegrityObject(
            key=f"{prefix}integrity/keys/{self.key.verifier.key_id:08x}.pub",
            body=(self.key.verifier.text + "\n").encode(),
        )

    def manifest(
        self,
        *,
        prefix: str,
        exporter: str,
        tree_base: int,
        first_seq: int,
        before: Frontier,
        after: Frontier,
        files: Sequence[FileEntry],
        omitted: Sequence[tuple[int, bytes]],
        created_ns: int,
        idle: bool = False,
        starts_log: bool = False,
        resumes_after: Checkpoint | None = None,
        log_id: str | None = None,
    ) -> IntegrityObject:
        """A batch's manifest. The batch is the events
        `first_seq`.. that take the tree from `before` to `after`; `omitted` are the
        (seq, leaf hash) of the batch's events in none of `files`. `starts_log`: the
        exporter's first batch, with the signed note that its log begins here;
        `resumes_after`: the signed note that the log here goes on after that
        checkpoint (`resume_text`); `log_id`: the destination's log it is of."""
        last_seq = first_seq + after.size - before.size - 1
        checkpoint = Checkpoint(origin=self.origin, size=after.size, root=after.root())
        created = datetime.datetime.fromtimestamp(created_ns / 1e9, datetime.UTC)
        document: dict[str, Any] = {
            "manifest": MANIFEST_FORMAT,
            "origin": self.origin,
            "node": self.node_id,
            "exporter": exporter,
            "created": created.isoformat().replace("+00:00", "Z"),
            "tree_base": tree_base,
            "first_seq": first_seq,
            "last_seq": last_seq,
            "frontier": {"size": before.size, "hashes": [_b64(h) for h in before.hashes]},
            "files": [dataclasses.asdict(f) for f in files],
            "omitted": [[seq, _b64(leaf)] for seq, leaf in omitted],
            "checkpoint": self.key.sign_note(checkpoint.text),
        }
        if log_id is not None:
            document["log"] = log_id
        if starts_log:
            text = start_text(origin=self.origin, exporter=exporter, first_seq=first_seq)
            document["exporter_start"] = self.key.sign_note(text)
        if resumes_after is not None:
            text = resume_text(
                origin=self.origin, exporter=exporter, after=resumes_after, first_seq=first_seq
            )
            document["exporter_resume"] = self.key.sign_note(text)
        document["manifest_note"] = self.key.sign_note(
            manifest_note_text(origin=self.origin, digest=manifest_digest(document))
        )
        name = f"{first_seq:012d}-{last_seq:012d}-{self.key.verifier.key_id:08x}"
        if idle:
            name += f"-{created_ns // 1_000_000_000}"
        key = f"{prefix}integrity/{self.node_id}/manifests/{name}.json"
        return IntegrityObject(key=key, body=orjson.dumps(document, option=orjson.OPT_INDENT_2))
