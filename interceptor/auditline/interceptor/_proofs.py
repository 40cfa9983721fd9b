"""Self-contained proofs that one event is in a node's signed log.

A proof (JSON) holds the event's exported line and its format, the tree's base and
the event's leaf index (its sequence number - base - 1), the tree size, the RFC 6962
inclusion path, and the signed checkpoint of that size. To check it: recompute the
event's leaf from the line (`_leaf`), check that its `Sequence` is base + index + 1,
walk the path to a root (RFC 9162 2.1.3.2), and check that the checkpoint is signed
by a trusted key of the log's name, names the same origin and size, and has that
root. The line must be as its exporter writes it (JSON as orjson writes it: no
spacing, no key twice), so that what a reader of the line sees is the event proven.
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

__all__ = ["PROOF_FORMAT", "ProofError", "prove", "verify_proof"]

PROOF_FORMAT = "auditline-proof/1"


def prove(location: Location, event_id: str, keys: Sequence[VerifierKey]) -> dict[str, Any]:
    """The proof of event `event_id` against the largest checkpoint its log proves;
    `ProofError` when the event is not found or its log cannot be proven up to it."""
    verifier = Verifier(location, keys, keep_leaves=True)
    report = verifier.run()
    if event_id not in verifier.lines:
        raise ProofError(f"event {event_id} is in no file of this location")
    seen = verifier.lines[event_id]
    log, seq = seen.log, seen.seq
    for finding in report.findings:
        # A proof holds only its line: one of a file or batch found changed would
        # carry the change away from the finding (found by a review helper).
        if finding.key == seen.key or (
            finding.node == log[0]
            and finding.first_seq is not None
            and finding.first_seq <= seq <= (finding.last_seq or finding.first_seq)
        ):
            raise ProofError(
                f"event {event_id}'s file or batch is not proven ({finding.kind}): "
                "run auditline verify"
            )
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


def verify_proof(proof: dict[str, Any], keys: Sequence[VerifierKey]) -> dict[str, Any]:
    """Check a proof; return its event. Raises `ProofError`, `NoteError` or `LineError`."""
    if proof.get("proof") != PROOF_FORMAT:
        raise ProofError(f"not an {PROOF_FORMAT} proof")
    opened = open_note(proof["checkpoint"], keys)
    checkpoint = Checkpoint.parse(opened.text)
    if checkpoint.origin != proof["origin"] or checkpoint.size != proof["tree_size"]:
        raise ProofError("the checkpoint is of another log or size")
    if opened.signer.name != checkpoint.origin:
        raise ProofError(f"the checkpoint is signed by the key of {opened.signer.name}")
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
