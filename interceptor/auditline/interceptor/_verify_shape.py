"""The shape a manifest must have before `auditline verify` reads it: every field of
the right type, so that a hostile or damaged manifest is a finding, not a crash that
stops the whole verification (one added object would otherwise block every verdict)."""

from __future__ import annotations

import datetime
from typing import Any

__all__ = ["MAX_BATCH_EVENTS", "manifest_problem"]

# An exporter's batch is at most a file's worth of events (thousands); a span past this
# is hostile, and would cost the verifier its time and memory.
MAX_BATCH_EVENTS = 10_000_000


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _runs(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(run, list) and len(run) == 2 and all(_int(n) for n in run) for run in value
    )


def _file_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "a file entry is not an object"
    for name in ("key", "sha256", "format"):
        if not isinstance(entry.get(name), str):
            return f"a file entry's {name} is not a string"
    if not _int(entry.get("bytes")):
        return "a file entry's size is not a number"
    if not _runs(entry.get("seqs")):
        return "a file entry's events are not [first, last] runs"
    return None


def manifest_problem(document: Any) -> str | None:
    """What is wrong with a manifest's shape, or None."""
    if not isinstance(document, dict):
        return "not a JSON object"
    for name in ("node", "origin", "checkpoint", "created"):
        if not isinstance(document.get(name), str):
            return f"its {name} is not a string"
    for name in ("first_seq", "last_seq"):
        if not _int(document.get(name)):
            return f"its {name} is not a number"
    if "tree_base" in document and not _int(document["tree_base"]):
        return "its tree_base is not a number"
    if "log" in document and not isinstance(document["log"], str):
        return "its log is not a string"
    try:
        created = datetime.datetime.fromisoformat(document["created"])
    except ValueError:
        return "its created time cannot be read"
    if created.tzinfo is None:
        return "its created time has no time zone"
    frontier = document.get("frontier")
    if not isinstance(frontier, dict) or not _int(frontier.get("size")):
        return "its frontier has no size"
    hashes = frontier.get("hashes")
    if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
        return "its frontier's hashes are not strings"
    first, last = document["first_seq"], document["last_seq"]
    if last - first >= MAX_BATCH_EVENTS:
        return f"its batch is of more than {MAX_BATCH_EVENTS} events"
    files = document.get("files", [])
    if not isinstance(files, list):
        return "its files are not a list"
    for entry in files:
        problem = _file_problem(entry)
        if problem is not None:
            return problem
        if any(not first <= a <= b <= last for a, b in entry["seqs"]):
            return "a file entry's events are outside its batch"
    omitted = document.get("omitted", [])
    if not isinstance(omitted, list) or not all(
        isinstance(item, list) and len(item) == 2 and _int(item[0]) and isinstance(item[1], str)
        for item in omitted
    ):
        return "its left-out events are not [number, leaf] pairs"
    if any(not first <= item[0] <= last for item in omitted):
        return "its left-out events are outside its batch"
    return None
