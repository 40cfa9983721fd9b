"""Regenerate the Python code of the contract: `python tools/generate.py`.

Writes messages (`*_pb2.py`), gRPC stubs (`*_pb2_grpc.py`) and their types
(`*.pyi`, by mypy-protobuf) for every file under `proto/` into `client/`.
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
OUT = ROOT / "client"
# The generated packages; everything else under client/auditline is hand-written.
GENERATED = ("auditline/account", "auditline/audit")


def main() -> int:
    for package in GENERATED:
        shutil.rmtree(OUT / package, ignore_errors=True)
    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    # mypy-protobuf's plugins sit beside this interpreter, which may not be on PATH.
    bin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--mypy_out={OUT}",
        f"--mypy_grpc_out={OUT}",
        *files,
    ]
    if protoc.main(args) != 0:
        return 1
    for package in GENERATED:
        for directory in [OUT / package, *(p for p in (OUT / package).rglob("*") if p.is_dir())]:
            if directory.name == "__pycache__":
                continue
            (directory / "__init__.py").write_text(
                '"""Generated from proto/ by tools/generate.py; do not edit."""\n'
            )
        (OUT / package / "py.typed").write_text("")
    print(f"generated {len(files)} files into {OUT.relative_to(ROOT)}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
