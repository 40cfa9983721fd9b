"""The limits on what callers choose that go into events, and how things past them are
cut: text with a marker that says so (a cut value must never pass for the whole one),
bodies to their smallest fields at every depth, flagged.
"""

from __future__ import annotations

import json
from typing import Any

from auditline.interceptor._status import cut_text

__all__ = [
    "MAX_ERROR_BYTES",
    "MAX_HEADER_CHARS",
    "MAX_UNKNOWN_METHOD_CHARS",
    "bounded_event",
    "cut_fields",
    "cut_marked",
]

MAX_ERROR_BYTES = 1024
# A header value; and any other text field of an event a handler recorded.
MAX_HEADER_CHARS = 1024
# A method name no descriptor of the server describes is the caller's to choose, and
# gRPC lets paths of ~64 KB through. Names past this (the longest real ones are ~100
# characters) are recorded cut.
MAX_UNKNOWN_METHOD_CHARS = 256


def cut_marked(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and a marker saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…(cut from {len(text)} characters)"


def cut_fields(body: dict[str, Any], cap: int) -> tuple[dict[str, Any], bool]:
    """`body` in at most `cap` characters of compact JSON, and whether anything was
    left out. What is kept is chosen smallest first, at every depth: the enums,
    names, flags and ids that say what a call did fit, and the long values (a padded
    description, a long list) are what goes. Cutting whole top-level fields in order
    let a caller hide a request's role or scope from the log, and from detections,
    behind a long field of its own (found by a review helper)."""
    if _size(body) <= cap:
        return body, False
    return _cut_object(body, cap, _CUT_DEPTH), True


# How deep the cut chooses (each level measures what is under it again); deeper, a
# value is kept whole or left out.
_CUT_DEPTH = 6


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def _cut(value: Any, cap: int, depth: int) -> Any:
    """`value` in at most `cap` characters, or `_LEFT_OUT`."""
    if _size(value) <= cap:
        return value
    if depth <= 0 or not isinstance(value, dict | list):
        return _LEFT_OUT  # text or a number: whole or not at all
    kept = (
        _cut_object(value, cap, depth) if isinstance(value, dict) else _cut_list(value, cap, depth)
    )
    return kept if _size(kept) <= cap else _LEFT_OUT  # an empty one past a tiny cap


def _cut_list(items: list[Any], cap: int, depth: int) -> list[Any]:
    """Each item cut to an equal share first, in order: the small fields of every
    item are kept, not the first items whole (a long list of padded items hid the
    one that mattered behind the others; found by a review helper)."""
    share = (cap - 2) // len(items) - 1
    kept, used = [], 2
    for item in items:
        cut = _cut(item, share, depth - 1)
        if cut is _LEFT_OUT:
            continue
        size = _size(cut) + 1
        if used + size > cap:
            break
        kept.append(cut)
        used += size
    return kept


def _cut_object(body: dict[str, Any], cap: int, depth: int) -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    used = 2
    for key, value in sorted(body.items(), key=lambda item: _size(item[1])):
        room = cap - used - _size(key) - 2  # the key, its colon and a comma
        if room <= 1:
            continue  # a long key (a map's are the caller's): the next may fit
        cut = _cut(value, room, depth - 1)
        if cut is _LEFT_OUT:
            continue
        chosen[key] = cut
        used += _size(key) + _size(cut) + 2
    return {key: chosen[key] for key in body if key in chosen}  # in the body's order


_LEFT_OUT: Any = object()


def _cut_lines(lines: list[str], cap: int) -> list[str]:
    kept, used = [], 0
    for line in lines:
        line = cut_marked(line, MAX_HEADER_CHARS)
        used += len(line)
        if used > cap:
            break
        kept.append(line)
    return kept


def bounded_event(document: dict[str, Any], cap: int) -> dict[str, Any]:
    """An event document (protobuf's JSON mapping of `ApiEvent`) cut as the builder cuts
    a call's own event: bodies and metadata at `cap` characters of JSON, the error at
    `MAX_ERROR_BYTES`, every other text at `MAX_HEADER_CHARS`. For events a handler
    recorded, which may copy what the caller sent (a failed login's access key, say)."""
    request = document.get("Request")
    response = document.get("Response")
    if request is not None:
        if "RequestParams" in request:
            params, cut = cut_fields(request["RequestParams"], cap)
            request["RequestParams"] = params
            request["RequestParamsTruncated"] = request["RequestParamsTruncated"] or cut
        metadata = {
            cut_marked(key, MAX_HEADER_CHARS): cut_marked(value, MAX_HEADER_CHARS)
            for key, value in request["Metadata"].items()
        }
        request["Metadata"] = cut_fields(metadata, cap)[0]
    if response is not None:
        if "ResponseBody" in response:
            body, cut = cut_fields(response["ResponseBody"], cap)
            response["ResponseBody"] = body
            response["ResponseBodyTruncated"] = response["ResponseBodyTruncated"] or cut
        error, cut = cut_text(response["ResponseError"], MAX_ERROR_BYTES)
        response["ResponseError"] = error
        response["ResponseErrorTruncated"] = response["ResponseErrorTruncated"] or cut
        response["ResponseErrorDetails"] = _cut_lines(response["ResponseErrorDetails"], cap)
    for part in (document, request or {}, response or {}):
        for key, value in part.items():
            if isinstance(value, str):
                part[key] = cut_marked(value, MAX_HEADER_CHARS)
    return document
