"""Running the `auditline` command line as a user does: a subprocess with its own
environment, its exit code checked."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def cli_env(target: str, config_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment with the server to call and a sessions directory of
    the test's own (never the user's)."""
    return {
        **os.environ,
        "AUDITLINE_TARGET": target,
        "AUDITLINE_CONFIG_DIR": str(config_dir),
        **extra,
    }


def run_auditline(
    env: Mapping[str, str], *args: str, code: int = 0, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`auditline ARGS…`; fails the test unless it exits with `code`."""
    result = subprocess.run(
        [sys.executable, "-m", "auditline.client.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(env),
    )
    assert result.returncode == code, (args, result.stdout, result.stderr)
    return result
