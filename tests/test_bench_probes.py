"""The benchmark's probes (`bench.probes`) cut the audit path where they say and leave
calls answered: a probe that no longer cut anything (a method renamed) would measure
the whole path under its name, and one that broke calls would measure nothing."""

from __future__ import annotations

import pytest
from auditline_testing.v1 import echo_pb2

from auditline.interceptor import _core
from bench import probes
from tests.interceptor.harness import Harness


@pytest.mark.parametrize("probe", [None, *probes.PROBES])
def test_a_probe_answers_calls_and_hands_no_event_to_the_worker(
    probe: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if probe is not None:
        for patch in probes.patches(probe):
            assert callable(getattr(patch.owner, patch.name, None)), patch
            monkeypatch.setattr(patch.owner, patch.name, patch.replacement)
    harness = Harness("sync", mode="worker")
    try:
        reply = harness.stub.Echo(echo_pb2.EchoRequest(text="probe"))
        assert reply.text == "probe"
        # Read after a flush: the interceptor's (which waits for the call's end) and
        # the worker's. Unprobed, the call's event is there.
        spooled = harness.sink.events
    finally:
        harness.close()
    assert len(spooled) == (1 if probe is None else 0)


def test_a_probe_whose_method_is_gone_refuses_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(_core.AuditCore, "_hand_on")
    with pytest.raises(RuntimeError, match="_hand_on is gone"):
        probes.apply("probe-settle")
