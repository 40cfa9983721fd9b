"""The Node.js example (examples/node): grpc-js calls the service with the contract's
.proto files and decodes a refusal's rich details. Runs where Node.js and npm are."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import ServeFactory
from tests.support.paths import REPOSITORY

KEY, SECRET = "AKNODE", "node-" + uuid.uuid4().hex
NODE, NPM = shutil.which("node"), shutil.which("npm")


@pytest.mark.skipif(NODE is None or NPM is None, reason="Node.js and npm are not installed")
def test_the_node_example_decodes_rich_error_details(serve: ServeFactory, tmp_path: Path) -> None:
    assert NODE is not None
    assert NPM is not None
    example = tmp_path / "node"
    shutil.copytree(
        REPOSITORY / "examples" / "node", example, ignore=shutil.ignore_patterns("node_modules")
    )
    # The packages come from npm's cache when it has them (`--prefer-offline`); an
    # install the registry leaves hanging is this machine's network, not the example.
    try:
        subprocess.run(
            [NPM, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=example,
            check=True,
            capture_output=True,
            timeout=200,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("npm could not install the example's packages within 200 s")
    process = serve(env={"AUDITLINE_ADMIN_ACCESS_KEY": KEY, "AUDITLINE_ADMIN_SECRET_KEY": SECRET})
    result = subprocess.run(
        [NODE, "client.js", process.target],
        cwd=example,
        env={
            "PATH": str(Path(NODE).parent),
            "AUDITLINE_PROTO_DIR": str(REPOSITORY / "proto"),
            "AUDITLINE_ACCESS_KEY": KEY,
            "AUDITLINE_SECRET_KEY": SECRET,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    login, create = (json.loads(line) for line in result.stdout.splitlines())
    assert login == {"step": "login", "service_account": "serviceAccounts/admin"}
    assert create["code"] == "INVALID_ARGUMENT"
    (detail,) = create["details"]
    assert detail["type"] == "google.rpc.BadRequest"
    assert detail["fieldViolations"][0]["field"] == "bucket_id"
