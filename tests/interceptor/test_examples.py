"""The embedding examples run from examples/README.md's lines, as written, in a clean
virtual environment that holds the interceptor library and nothing else of auditline."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import REPOSITORY

EXAMPLES = REPOSITORY / "examples"
# The README's paths, and this run's own in their place (tests run in parallel).
README_VENV = "/tmp/greeter-venv"
README_AUDIT_DIR = "/tmp/greeter-audit"


def readme_commands() -> list[str]:
    text = (EXAMPLES / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each README line run in order from the repository's root; stdout by script."""
    workdir = tmp_path_factory.mktemp("examples")
    venv, audit_dir = workdir / "venv", workdir / "audit"
    # Nothing of the test run's own environment leaks in.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPOSITORY))
    )
    found: dict[str, str] = {}
    for line in readme_commands():
        command = line.replace(README_VENV, str(venv)).replace(README_AUDIT_DIR, str(audit_dir))
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=REPOSITORY,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, f"{line}\n{result.stderr}"
        script = re.search(r"examples/(\w+\.py)", line)
        if script:
            found[script.group(1)] = result.stdout
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    names = {entry["name"] for entry in json.loads(installed)}
    assert {n for n in names if n.startswith("auditline")} == {
        "auditline-contract",
        "auditline-interceptor",
    }
    assert not names & {"SQLAlchemy", "sqlalchemy", "alembic", "boto3", "opentelemetry-sdk"}
    found["audit_dir"] = str(audit_dir)
    return found


def test_the_readme_runs_every_example() -> None:
    scripts = {path.name for path in EXAMPLES.glob("*.py")}
    mentioned = set(re.findall(r"examples/(\w+\.py)", " ".join(readme_commands())))
    assert scripts == mentioned


@pytest.mark.parametrize("script", ["greeter.py", "greeter_async.py"])
def test_greeter_example_audits_its_call(outputs: dict[str, str], script: str) -> None:
    greeting, event_line = outputs[script].strip().splitlines()
    assert greeting == "Hello, auditor!"
    event = json.loads(event_line)
    assert event["EventName"] == "SayHello"
    assert event["Service"] == "greeter.Greeter"
    assert event["Activity"] == "ACTIVITY_READ"  # from the verb: the greeter has no options
    assert event["Request"]["RequestParams"] == {"value": "auditor"}
    assert event["Response"]["ResponseBody"] == {"value": "Hello, auditor!"}
    assert event["Response"]["ResponseCode"] == 0
    assert event["Request"]["MessageCount"] == 1


def test_durable_example_exports_and_verifies_every_call(outputs: dict[str, str]) -> None:
    lines = outputs["greeter_durable.py"].strip().splitlines()
    assert lines == [
        "Hello, auditor!",
        "Hello, operator!",
        "Hello, engineer!",
        "verified 3 events in 1 files, 0 findings (ok)",
    ]
    log = Path(outputs["audit_dir"]) / "log"
    (data,) = [p for p in log.rglob("*.jsonl.gz")]
    assert data.relative_to(log).parts[:2] == ("apievent", "account_api")
    assert list(log.glob("integrity/keys/*.pub"))
