"""`make check` runs `buf breaking` against the contract as last released
(tools/contract-baseline.binpb): a change that breaks clients fails it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.paths import REPOSITORY
from tests.support.processes import find_binary

BASELINE = REPOSITORY / "tools" / "contract-baseline.binpb"


def _breaking(workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_binary("buf"), "breaking", "--against", str(BASELINE)],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy(tmp_path: Path) -> Path:
    workspace = tmp_path / "contract"
    shutil.copytree(
        REPOSITORY / "proto",
        workspace / "proto",
        ignore=shutil.ignore_patterns("*.py", "*.pyi", "*.binpb", "__pycache__"),
    )
    shutil.copy(REPOSITORY / "buf.yaml", workspace / "buf.yaml")
    return workspace


def test_the_contract_keeps_what_was_released(tmp_path: Path) -> None:
    assert _breaking(_copy(tmp_path)).returncode == 0


def test_removing_a_field_is_refused(tmp_path: Path) -> None:
    workspace = _copy(tmp_path)
    auth = workspace / "proto" / "auditline" / "account" / "v1" / "auth.proto"
    text = auth.read_text()
    field = "  string secret_key = 2 ["
    assert field in text
    auth.write_text(text.replace(field, "  reserved 2;\n  string no_secret_key = 3 ["))
    result = _breaking(workspace)
    assert result.returncode != 0
    assert "secret_key" in result.stdout + result.stderr
