"""Fixtures of the interceptor's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.interceptor.harness import FLAVOURS, Harness


@pytest.fixture(params=FLAVOURS)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(request.param)
    yield h
    h.close()
