"""Checkpoints an earlier verification saw, checked again (`auditline verify --expect`).

A bucket alone cannot show that a log's whole tail, or the whole log, is gone: what
is left verifies as a shorter log. An auditor who keeps each run's report where the
bucket's writers cannot reach it gives it to the next run: every log it names must
still be at the location and prove the checkpoint it ended with then, the same one
(a witness of the log's size, in the manner of C2SP tlog-witness, kept by the
auditor)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from auditline.interceptor._note import Checkpoint, NoteError, VerifierKey, open_note
from auditline.interceptor._verify_batch import LogKey
from auditline.interceptor._verify_report import NodeReport

__all__ = ["ExpectedCheckpoint", "check_expected", "expected_from_report"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExpectedCheckpoint:
    """The signed checkpoint a log (its node and prefix) ended with when last seen."""

    node: str
    prefix: str
    note: str


def expected_from_report(report: Any) -> list[ExpectedCheckpoint]:
    """The checkpoints of a report's `as_dict()` (as `--json` prints it); `ValueError`
    when it is not one."""
    try:
        return [
            ExpectedCheckpoint(
                node=str(node["node"]), prefix=str(node["prefix"]), note=str(node["checkpoint"])
            )
            for node in report["nodes"]
            if node.get("checkpoint")
        ]
    except (KeyError, TypeError, AttributeError):
        raise ValueError("not the JSON report of auditline verify --json") from None


def check_expected(
    expected: Sequence[ExpectedCheckpoint],
    nodes: Sequence[NodeReport],
    notes: Mapping[LogKey, Mapping[int, str]],
    keys: Sequence[VerifierKey],
    find: Callable[..., None],
) -> None:
    """Report (`find(kind, node, detail, ...)`) each expected checkpoint its log no
    longer proves: the log gone, shorter, or another."""
    found = {(report.node, report.prefix): report for report in nodes}
    for seen in expected:
        where = f"{seen.node}'s log{f' under {seen.prefix}' if seen.prefix else ''}"
        try:
            checkpoint = Checkpoint.parse(open_note(seen.note, keys).text)
        except NoteError as exc:
            find("untrusted-checkpoint", seen.node, f"the checkpoint expected of {where}: {exc}")
            continue
        report = found.get((seen.node, seen.prefix))
        if report is None:
            find("missing-log", seen.node, f"{where}, tree size {checkpoint.size} when seen")
            continue
        proven = notes.get((seen.node, seen.prefix), {}).get(checkpoint.size)
        if proven is not None and Checkpoint.parse(open_note(proven, keys).text) == checkpoint:
            continue
        if report.tree_size < checkpoint.size:
            find(
                "rolled-back",
                seen.node,
                f"{where} proves tree size {report.tree_size}, {checkpoint.size} when seen",
            )
        else:
            find(
                "inconsistent-checkpoints",
                seen.node,
                f"{where} does not prove the checkpoint of tree size {checkpoint.size} seen before",
            )
