"""Self-contained proofs that one event is in a node's signed log.

A proof (JSON) holds the event's exported line and its format, the tree's base and
the event's leaf index (its sequence number - base - 1), the tree size, the RFC 6962
inclusion path, and the signed checkpoint of that size. To check it: recompute the
event's leaf from the line (`_leaf`), check that its `Sequence` is base + index + 1,
walk the path to a root (RFC 9162 2.1.3.2), and check that the checkpoint is signed
by a trusted key, names the same origin and size, and has that root. The line must
be as its exporter writes it (JSON as orjson writes it: no spacing, no key twice), so
that what a reader of the line sees is the event proven.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson

from auditline.interceptor._leaf import event_leaf, read_line
from auditline.interceptor._locations import Location
from auditline.interceptor._merkle import ProofError, inclusion_proof_after, verify_inclusion
from auditline.interceptor._note import Checkpoint, VerifierKey, open_note
from auditline.interceptor._verify import Verifier
from auditline.interceptor._verify_batch import SeenLine
from auditline.interceptor._verify_report import Finding

__all__ = ["PROOF_FORMAT", "ProofError", "prove", "verify_proof"]

PROOF_FORMAT = "auditline-proof/1"


def prove(location: Location, event_id: str, keys: Sequence[VerifierKey]) -> dict[str, Any]:
    """The proof of event `event_id` against the largest checkpoint its log proves;
    `ProofError` when the event is not found or its log cannot be proven up to it."""
    verifier = Verifier(location, keys, keep_leaves=True)
    report = verifier.run()
    if event_id not in verifier.lines:
        raise ProofError(f"event {event_id} is in no file of this location")
    # A proof holds only its line: none is made from a file or batch found changed,
    # which would carry the change away from the finding (found by a review helper).
    # An event in several logs is proven from one with no finding.
    problems = [_finding_about(seen, report.findings) for seen in verifier.lines[event_id]]
    if all(problems):
        raise ProofError(
            f"event {event_id}'s file or batch is not proven ({problems[0]}): run auditline verify"
        )
    seen = verifier.lines[event_id][problems.index("")]
    log, seq = seen.log, seen.seq
    base, notes = verifier.bases[log], verifier.notes.get(log, {})
    index = seq - base - 1
    for before, leaves in verifier.leaves[log]:  # the stretch of batches that holds it
        sizes = [s for s in notes if before.size <= index < s <= before.size + len(leaves)]
        if sizes:
            break
    else:
        raise ProofError(f"no checkpoint proven from the files covers event {event_id}")
    size = max(sizes)
    note = notes[size]
    text = open_note(note, keys).text
    return {
        "proof": PROOF_FORMAT,
        "origin": Checkpoint.parse(text).origin,
        "tree_base": base,
        "format": seen.format,
        "line": seen.line.decode(),
        "leaf_index": index,
        "tree_size": size,
        "inclusion": [
            base64.b64encode(h).decode()
            for h in inclusion_proof_after(index, size, before=before, leaves=leaves)
        ],
        "checkpoint": note,
    }


def _finding_about(seen: SeenLine, findings: Sequence[Finding]) -> str:
    """The kind of the first finding about the line's file or batch ("" if none)."""
    node, prefix = seen.log
    for finding in findings:
        if finding.key == seen.key or (
            (finding.node, finding.prefix) == (node, prefix)
            and finding.first_seq is not None
            and finding.first_seq <= seen.seq <= (finding.last_seq or finding.first_seq)
        ):
            return finding.kind
    return ""


def verify_proof(proof: dict[str, Any], keys: Sequence[VerifierKey]) -> dict[str, Any]:
    """Check a proof; return its event. Raises `ProofError`, `NoteError` or `LineError`."""
    if proof.get("proof") != PROOF_FORMAT:
        raise ProofError(f"not an {PROOF_FORMAT} proof")
    checkpoint = Checkpoint.parse(open_note(proof["checkpoint"], keys).text)
    if checkpoint.origin != proof["origin"] or checkpoint.size != proof["tree_size"]:
        raise ProofError("the checkpoint is of another log or size")
    line = proof["line"].encode()
    event = read_line(proof["format"], line)  # LineError if it is no JSON at all
    if orjson.dumps(orjson.loads(line)) != line.rstrip(b"\n"):
        raise ProofError("the line is not as its exporter writes it (spacing, a key twice)")
    index = int(proof["leaf_index"])
    if int(event["Sequence"]) != int(proof["tree_base"]) + index + 1:
        raise ProofError("the event's sequence number is not its leaf index")
    path = [base64.b64decode(h, validate=True) for h in proof["inclusion"]]
    verify_inclusion(index, checkpoint.size, event_leaf(event), path, checkpoint.root)
    return event
