"""The README's walkthrough, run as a user runs it: its own commands, verbatim, in a
shell; and the same steps' details (file modes, exit codes, what was recorded)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ServeFactory
from tests.support.cli import run_auditline
from tests.support.paths import REPOSITORY

SECRET = "walkthrough-secret-0123"


def test_the_walkthrough(serve: ServeFactory, tmp_path: Path) -> None:
    process = serve(
        "--export-interval",
        "1",
        env={"AUDITLINE_ADMIN_ACCESS_KEY": "AKADMIN", "AUDITLINE_ADMIN_SECRET_KEY": SECRET},
    )
    env = {
        **os.environ,
        "AUDITLINE_TARGET": process.target,
        "AUDITLINE_CONFIG_DIR": str(tmp_path / "config"),
    }

    def auditline(*args: str, code: int = 0, extra: dict[str, str] | None = None) -> str:
        result = run_auditline({**env, **(extra or {})}, *args, code=code)
        return result.stdout + result.stderr

    # Not logged in yet: a clear message, a non-zero exit.
    assert "not logged in" in auditline("bucket", "list", code=1)
    assert "logged in to" in auditline(
        "login", "--access-key", "AKADMIN", extra={"AUDITLINE_SECRET_KEY": SECRET}
    )
    sessions = tmp_path / "config" / "sessions.json"
    assert sessions.stat().st_mode & 0o777 == 0o600
    assert SECRET not in sessions.read_text()

    out = auditline(
        "bucket",
        "create",
        "audit-trail",
        "--immutable",
        "--retention-mode",
        "compliance",
        "--retention-days",
        "1",
    )
    assert "buckets/audit-trail  yes" in out
    out = auditline("account", "create", "reader")
    assert "secret key (shown once" in out
    temporary = json.loads(auditline("account", "create", "temporary", "--json"))
    account_id = temporary["service_account"]["name"].removeprefix("serviceAccounts/")
    assert f"deleted serviceAccounts/{account_id}" in auditline("account", "delete", account_id)
    out = auditline(
        "permission", "create", "read-all", "--id", "read-all", "--all-buckets", "--access", "read"
    )
    assert "permissions/read-all" in out
    out = auditline("audit", "target", "audit-trail")
    assert "audit-trail" in out
    listed = json.loads(auditline("bucket", "list", "--json"))
    assert {b["name"] for b in listed["buckets"]} >= {"buckets/audit-trail"}
    # A plain bucket cannot be the target; the server says why, the exit code is 1.
    auditline("bucket", "create", "plain-bucket")
    assert "only immutable" in auditline("audit", "target", "plain-bucket", code=1)
    # Usage errors exit 2.
    auditline("bucket", "create", code=2)
    assert "CreateBucket" in auditline("events", "list", "--event", "CreateBucket")
    assert "default" in auditline("exporter", "list")
    assert "auditline CreateBucket" in auditline("catalog")

    assert process.terminate() == 0
    # As the README reads them: the account API log (the IAM and settings logs are in
    # their own structures, tests/server/test_log_shapes.py).
    exported = process.data_dir / "objects" / "audit-trail" / "objects"
    files = sorted((exported / "apievent" / "account_api").rglob("*.gz"))
    assert files
    first_lines = [
        json.loads(line)
        for path in files
        for line in gzip.decompress(path.read_bytes()).splitlines()[:2]
    ]
    assert all("ApiEvent" in record for record in first_lines)


def _walkthrough_blocks() -> list[list[tuple[str, list[str]]]]:
    """The walkthrough's `sh` blocks: each a list of (command, the output shown)."""
    text = (REPOSITORY / "README.md").read_text()
    section = text[text.index("## Five-minute walkthrough") : text.index("## Architecture")]
    blocks = []
    for block in section.split("```sh\n")[1:]:
        steps: list[tuple[str, list[str]]] = []
        for line in block[: block.index("```")].splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
        blocks.append(steps)
    return blocks


def _looks_alike(shown: list[str], output: str) -> bool:
    """The README's output and this run's agree where a run cannot differ: a table's
    header, the start of a message, the shape of an exported line."""
    lines = output.splitlines()
    if not shown:
        return True
    if not lines:
        return False
    first = shown[0]
    if first.split() and all(w.isupper() or "." in w or "_" in w for w in first.split()):
        return lines[0].split() == first.split()  # a table's header
    if first.startswith('{"ApiEvent":'):
        return len(lines) == len(shown) and all(line.startswith('{"ApiEvent":') for line in lines)
    return lines[0].split()[:3] == first.split()[:3]


def test_the_readme_walkthrough_runs_as_written(serve: ServeFactory, tmp_path: Path) -> None:
    # As `make run` does: ./data, keys generated into data/admin-credentials.
    process = serve(data_dir=tmp_path / "data")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUDITLINE_ADMIN_")},
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        "AUDITLINE_TARGET": process.target,
        "AUDITLINE_CONFIG_DIR": str(tmp_path / "config"),
    }
    running, stopped = _walkthrough_blocks()
    assert len(running) >= 5
    for when, steps in (("running", running), ("stopped", stopped)):
        if when == "stopped":
            assert process.terminate() == 0  # the README's Ctrl-C
        for command, shown in steps:
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, (command, result.stdout, result.stderr)
            assert _looks_alike(shown, result.stdout), (command, shown, result.stdout)
