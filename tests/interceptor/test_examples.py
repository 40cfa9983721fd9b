"""The embedding examples in examples/ run as a user would run them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.paths import REPOSITORY

EXAMPLES = REPOSITORY / "examples"


@pytest.mark.parametrize("script", ["greeter.py", "greeter_async.py"])
def test_greeter_example_audits_its_call(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    greeting, event_line = result.stdout.strip().splitlines()
    assert greeting == "Hello, auditor!"
    event = json.loads(event_line)
    assert event["EventName"] == "SayHello"
    assert event["Service"] == "greeter.Greeter"
    assert event["Activity"] == "ACTIVITY_READ"  # from the verb: the greeter has no options
    assert event["Request"]["RequestParams"] == {"value": "auditor"}
    assert event["Response"]["ResponseBody"] == {"value": "Hello, auditor!"}
    assert event["Response"]["ResponseCode"] == 0
    assert event["Request"]["MessageCount"] == 1
