"""`make cluster` (tools/cluster.py) starts PostgreSQL, SeaweedFS and three replicas, and
a round-robin client reaches them: its `--check` run, as a newcomer would start it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPOSITORY

pytestmark = pytest.mark.seaweedfs


def test_the_cluster_starts_and_answers(tmp_path: Path) -> None:
    where = tmp_path / "cluster"
    done = subprocess.run(
        [sys.executable, str(REPOSITORY / "tools" / "cluster.py"), "--dir", str(where), "--check"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    replicas = re.findall(r"^replica +(127\.0\.0\.1:\d+)", done.stdout, re.MULTILINE)
    assert len(set(replicas)) == 3
    assert done.stdout.rstrip().endswith(f"checked: 3 calls through ipv4:{','.join(replicas)}")
    keys = where / "admin-credentials"
    assert keys.stat().st_mode & 0o777 == 0o600
    secret = keys.read_text().split("secret_key=")[1].strip()
    assert secret not in done.stdout + done.stderr  # the keys are in the file, not shown
