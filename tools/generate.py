"""Regenerate the Python code of the contract: `python tools/generate.py`.

Writes messages (`*_pb2.py`), gRPC stubs (`*_pb2_grpc.py`) and their types
(`*.pyi`, by mypy-protobuf) beside every file under `proto/` (the contract's
distribution ships both, as googleapis-common-protos does), and for the test-only
protos under `tests/proto/` into `tests/generated/`.
The output is committed; CI runs this and fails when `git diff` shows a change.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = PROTO
# The generated packages (under proto/ only the .proto files are written by hand).
GENERATED = ("auditline/account", "auditline/audit")
TEST_PROTO = ROOT / "tests" / "proto"
TEST_OUT = ROOT / "tests" / "generated"
TEST_GENERATED = ("auditline_testing",)


# The contract's descriptors with their comments, for the event catalog's descriptions
# (generated modules keep no comments).
DESCRIPTORS = OUT / "auditline" / "audit" / "v1" / "contract.binpb"


def main() -> int:
    if generate(PROTO, OUT, GENERATED, [PROTO]) or generate(
        TEST_PROTO, TEST_OUT, TEST_GENERATED, [TEST_PROTO, PROTO]
    ):
        return 1
    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    return int(
        protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO}",
                f"-I{well_known}",
                f"--descriptor_set_out={DESCRIPTORS}",
                "--include_source_info",
                *files,
            ]
        )
    )


def _remove_generated(package: Path) -> None:
    """Delete what an earlier run wrote (a file whose .proto is gone goes too)."""
    if not package.exists():
        return
    for path in package.rglob("*"):
        if path.is_file() and (
            path.name.endswith(_GENERATED_SUFFIXES) or path.name in ("__init__.py", "py.typed")
        ):
            path.unlink()
        elif path.name == "__pycache__":
            shutil.rmtree(path)


_GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(source: Path, out: Path, packages: tuple[str, ...], include: list[Path]) -> int:
    """Generate every .proto under `source` into `out`; return protoc's exit code."""
    for package in packages:
        _remove_generated(out / package)
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(str(p.relative_to(source)) for p in source.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    # mypy-protobuf's plugins sit beside this interpreter, which may not be on PATH.
    bin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        *(f"-I{path}" for path in include),
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        return 1
    for package in packages:
        for directory in [out / package, *(p for p in (out / package).rglob("*") if p.is_dir())]:
            if directory.name == "__pycache__":
                continue
            (directory / "__init__.py").write_text(
                '"""Generated from proto/ by tools/generate.py; do not edit."""\n'
            )
        (out / package / "py.typed").write_text("")
    print(f"generated {len(files)} files into {out.relative_to(ROOT)}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
