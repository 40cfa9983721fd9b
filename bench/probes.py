"""Probe modes of `bench.interceptor`: the `auditline-worker` mode (sync server) with the
audit path cut short after one of its steps, to see what each step costs the serving
process. In order, each keeps one step more than the one before:

- `probe-wrap`: the handlers are wrapped (bytes in and out, as the interceptor's
  are); nothing is captured.
- `probe-capture`: each call is captured (its `CallRecord`) and the record dropped
  on the request thread.
- `probe-settle`: the record waits for gRPC's termination callback, which settles
  it, and is dropped there.
- `probe-encode`: the settled record is encoded for the audit worker, and dropped
  (not sent).

`auditline-worker` is the whole path: the encoded records also go to the worker in
batches, and its acknowledgements come back.

Each probe replaces one private method, in the bench's server process only (every
mode runs in a process of its own). A method that is no longer there fails the probe,
rather than leave it measuring the whole path under a wrong name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import grpc

PROBES = ("probe-wrap", "probe-capture", "probe-settle", "probe-encode")
PROBED_MODE = "auditline-worker"  # what a probe runs, cut short


@dataclasses.dataclass(frozen=True, kw_only=True)
class Patch:
    """`owner.name` (a method) replaced by `replacement`."""

    owner: type
    name: str
    replacement: Callable[..., Any]


def patches(probe: str) -> list[Patch]:
    """What `probe` replaces."""
    from auditline.interceptor import _capture_codec, _core, _sync, _worker

    if probe == "probe-wrap":
        original_wrap = _sync.AuditInterceptor._wrap

        def wrap(self: Any, info: Any, handler: Any) -> Any:
            if handler.unary_unary is None:
                return original_wrap(self, info, handler)
            behaviour = handler.unary_unary
            parse, serialize = handler.request_deserializer, handler.response_serializer

            def unary(raw: bytes, context: grpc.ServicerContext) -> bytes:
                return serialize(behaviour(parse(raw), context))  # type: ignore[no-any-return]

            return grpc.unary_unary_rpc_method_handler(unary)

        return [Patch(owner=_sync.AuditInterceptor, name="_wrap", replacement=wrap)]
    if probe == "probe-capture":
        original_submit = _core.AuditCore.submit

        def submit(self: Any, record: Any, *, wait: bool, when_ended: Any = None) -> None:
            if wait or when_ended is None:
                original_submit(self, record, wait=wait, when_ended=when_ended)

        return [Patch(owner=_core.AuditCore, name="submit", replacement=submit)]
    if probe == "probe-settle":

        def hand_on(self: Any, record: Any) -> None:
            pass

        return [Patch(owner=_core.AuditCore, name="_hand_on", replacement=hand_on)]
    if probe == "probe-encode":
        original_emit = _worker.AuditWorker.emit_captures

        def emit_captures(self: Any, records: Sequence[Any], *, wait: bool) -> None:
            if wait:
                original_emit(self, records, wait=wait)
                return
            for record in records:
                _capture_codec.encode_record(record, self._ids.next())

        return [Patch(owner=_worker.AuditWorker, name="emit_captures", replacement=emit_captures)]
    raise ValueError(f"unknown probe {probe!r}: one of {', '.join(PROBES)}")


def apply(probe: str) -> None:
    """Replace what `probe` replaces, in this process."""
    for patch in patches(probe):
        if not callable(getattr(patch.owner, patch.name, None)):
            raise RuntimeError(f"{patch.owner.__name__}.{patch.name} is gone: mend {probe}")
        setattr(patch.owner, patch.name, patch.replacement)
