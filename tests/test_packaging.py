"""The distributions and their layers: each wheel holds its own layer only, installs
alone into a clean virtual environment, and imports nothing above it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.support.paths import REPOSITORY


@dataclasses.dataclass(frozen=True, kw_only=True)
class Distribution:
    name: str
    directory: str
    packages: tuple[str, ...]
    # Modules that must not be imported (nor, for third parties, even installed).
    forbidden: tuple[str, ...]


CONTRACT = Distribution(
    name="auditline-contract",
    directory="proto",
    packages=("auditline.account", "auditline.audit", "auditline.contract", "auditline.errors"),
    forbidden=("auditline.interceptor", "auditline.client", "auditline.server", "sqlalchemy"),
)
INTERCEPTOR = Distribution(
    name="auditline-interceptor",
    directory="interceptor",
    packages=("auditline.interceptor",),
    forbidden=(
        "auditline.client",
        "auditline.server",
        "sqlalchemy",
        "alembic",
        "yaml",
        "boto3",
        "opentelemetry.sdk",
    ),
)
CLIENT = Distribution(
    name="auditline-client",
    directory="client",
    packages=("auditline.client",),
    forbidden=("auditline.interceptor", "auditline.server", "sqlalchemy", "opentelemetry"),
)
SERVER = Distribution(
    name="auditline-server",
    directory="server",
    packages=("auditline.server",),
    forbidden=(),
)
DISTRIBUTIONS = (CONTRACT, INTERCEPTOR, CLIENT, SERVER)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    for directory in [d.directory for d in DISTRIBUTIONS] + ["."]:
        subprocess.run(
            [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
            cwd=REPOSITORY / directory,
            check=True,
            capture_output=True,
            timeout=120,
        )
    return out


def _wheel(wheels: Path, name: str) -> zipfile.ZipFile:
    (built,) = wheels.glob(f"{name.replace('-', '_')}-*.whl")
    return zipfile.ZipFile(built)


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=lambda d: d.name)
def test_each_wheel_holds_its_own_layer_only(wheels: Path, dist: Distribution) -> None:
    names = [n for n in _wheel(wheels, dist.name).namelist() if ".dist-info/" not in n]
    # `auditline` is a namespace every distribution adds to: none may claim it.
    assert "auditline/__init__.py" not in names
    prefixes = tuple(p.replace(".", "/") + "/" for p in dist.packages)
    assert [n for n in names if not n.startswith(prefixes)] == []
    for package in prefixes:
        assert f"{package}py.typed" in names


def test_the_contract_ships_its_proto_files_beside_the_code(wheels: Path) -> None:
    names = _wheel(wheels, CONTRACT.name).namelist()
    for proto in sorted((REPOSITORY / "proto").rglob("*.proto")):
        relative = proto.relative_to(REPOSITORY / "proto").as_posix()
        assert relative in names
        assert relative.replace(".proto", "_pb2.pyi") in names


def test_the_workspace_wheel_is_the_product_and_holds_no_code(wheels: Path) -> None:
    wheel = _wheel(wheels, "auditline")
    assert [n for n in wheel.namelist() if ".dist-info/" not in n] == []
    metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith("METADATA"))).decode()
    assert "Requires-Dist: auditline-server[postgres]==0.1.0" in metadata
    assert "Requires-Dist: auditline-client==0.1.0" in metadata


def test_every_distribution_has_the_same_version() -> None:
    versions = {
        directory: tomllib.loads((REPOSITORY / directory / "pyproject.toml").read_text())[
            "project"
        ]["version"]
        for directory in [d.directory for d in DISTRIBUTIONS] + ["."]
    }
    assert len(set(versions.values())) == 1, versions


_PROBE = """
import importlib, importlib.util, pkgutil, sys
packages, forbidden, source = sys.argv[1].split(","), sys.argv[2].split(","), sys.argv[3]
for name in packages:
    package = importlib.import_module(name)
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        if ".migrations." not in info.name:
            importlib.import_module(info.name)
imported = [
    m for m in sys.modules
    for f in forbidden if f and (m == f or m.startswith(f + "."))
]
assert not imported, f"imported across the layer: {imported}"
installed = [f for f in forbidden if f and "." not in f and importlib.util.find_spec(f)]
assert not installed, f"installed though not needed: {installed}"
stray = [m.__name__ for m in list(sys.modules.values())
         if (getattr(m, "__file__", None) or "").startswith(source)]
assert not stray, f"imported from the source tree: {stray}"
print("ok")
"""


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=lambda d: d.name)
def test_each_wheel_installs_alone_and_imports_nothing_above_it(
    wheels: Path, dist: Distribution, tmp_path: Path
) -> None:
    """A clean virtual environment with only this distribution (and what it declares):
    every module imports, and nothing of a layer above it is imported or installed."""
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--find-links",
            str(wheels),
            dist.name,
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    result = subprocess.run(
        [
            str(python),
            "-c",
            _PROBE,
            ",".join(dist.packages),
            ",".join(dist.forbidden),
            str(REPOSITORY) + "/",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.stdout.strip() == "ok", result.stderr
    if dist in (CLIENT, SERVER):
        commands = subprocess.run(
            [str(venv / "bin" / "auditline"), "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert ("serve" in commands) is (dist is SERVER)
        assert ("verify" in commands) is (dist is SERVER)
