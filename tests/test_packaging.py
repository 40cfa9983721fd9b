"""The distribution: one importable name, `auditline`, from a wheel and an editable install."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (built,) = out.glob("auditline-*.whl")
    return built


def test_wheel_holds_only_the_auditline_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"auditline", wheel.name.split("-py3")[0] + ".dist-info"}
    # A namespace package: neither source root may claim `auditline` alone.
    assert "auditline/__init__.py" not in names
    for expected in (
        "auditline/account/v1/auth_pb2.py",
        "auditline/account/v1/auth_pb2.pyi",
        "auditline/account/v1/auth_pb2_grpc.py",
        "auditline/account/v1/auth_pb2_grpc.pyi",
        "auditline/audit/v1/event_pb2.py",
        "auditline/client/cli.py",
        "auditline/server/app.py",
        "auditline/interceptor/__init__.py",
    ):
        assert expected in names
    for typed in ("account", "audit", "client", "server", "interceptor"):
        assert f"auditline/{typed}/py.typed" in names


def test_installed_wheel_imports_without_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    source_roots = [str(ROOT / "client"), str(ROOT / "server"), str(ROOT)]
    probe = (
        "import sys\n"
        f"sys.path[:] = [{str(target)!r}] + [p for p in sys.path if p not in {source_roots!r}]\n"
        "import auditline.server, auditline.client.cli, auditline.account.v1.auth_pb2_grpc\n"
        "import auditline.interceptor\n"
        "for m in (auditline.server, auditline.client.cli, auditline.account.v1.auth_pb2_grpc):\n"
        f"    assert m.__file__.startswith({str(target)!r}), m.__file__\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_interceptor_does_not_import_the_account_service() -> None:
    probe = (
        "import sys, auditline.interceptor\n"
        "bad = [m for m in sys.modules if m.startswith('auditline.server')]\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
