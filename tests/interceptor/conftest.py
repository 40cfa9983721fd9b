"""Fixtures of the interceptor's tests: every flavour of server, in every audit mode."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.interceptor.harness import FLAVOURS, MODES, Harness


@pytest.fixture(
    params=list(itertools.product(FLAVOURS, MODES)),
    ids=lambda p: "-".join(p),
)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    flavour, mode = request.param
    h = Harness(flavour, mode=mode)
    yield h
    h.close()


@pytest.fixture(params=MODES)
def audit_mode(request: pytest.FixtureRequest) -> str:
    """Where a test's `Harness` builds its events."""
    return str(request.param)
