"""The command line's one error path: every server answer, connection failure and bad
local file is one message and an exit code, never a traceback (`--debug` adds it);
a usage error shows the usage of the command that was given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.conftest import ServeFactory
from tests.support.certs import make_pki
from tests.support.cli import run_auditline
from tests.support.processes import free_fixed_port

KEY, SECRET = "AKCLI", "cli-" + uuid.uuid4().hex
ENV = {"AUDITLINE_ADMIN_ACCESS_KEY": KEY, "AUDITLINE_ADMIN_SECRET_KEY": SECRET}


def _run(
    env: dict[str, str], *args: str, code: int, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return run_auditline(env, *args, code=code, stdin=stdin)


def _env(tmp_path: Path, target: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    return (
        env
        | {
            "AUDITLINE_TARGET": target,
            "AUDITLINE_CONFIG_DIR": str(tmp_path / "config"),
        }
        | extra
    )


def test_server_answers_and_bad_files_are_messages_not_tracebacks(
    serve: ServeFactory, tmp_path: Path
) -> None:
    process = serve(env=ENV)
    env = _env(tmp_path, process.target)
    empty = _run(env, "login", "--access-key", KEY, code=1, stdin="")
    assert "no secret key: set AUDITLINE_SECRET_KEY" in empty.stderr
    wrong = _run(env, "login", "--access-key", KEY, code=1, stdin="wrong-secret\n")
    assert "error: UNAUTHENTICATED:" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    logged = _run(env, "login", "--access-key", KEY, "--json", code=0, stdin=SECRET + "\n")
    answer = json.loads(logged.stdout)
    assert answer["service_account"].startswith("serviceAccounts/")
    assert answer["role"] == "ROLE_ADMIN"
    assert SECRET not in logged.stdout
    # A resource by its id or by its name as `list` prints it (the name was doubled:
    # buckets/buckets/x, NOT_FOUND; found by a helper).
    for given in ("auditline-audit-logs", "buckets/auditline-audit-logs"):
        got = json.loads(_run(env, "bucket", "get", given, "--json", code=0).stdout)
        assert got["name"] == "buckets/auditline-audit-logs"
    # A corrupt sessions file: what to do about it, no traceback; --debug shows one.
    (tmp_path / "config" / "sessions.json").write_text("{not json")
    broken = _run(env, "bucket", "list", code=1)
    assert "is not a sessions file" in broken.stderr
    assert "Traceback" not in broken.stderr
    debug = _run(env, "--debug", "bucket", "list", code=1)
    assert "Traceback" in debug.stderr


def test_a_stopped_server_is_a_message(tmp_path: Path) -> None:
    env = _env(tmp_path, f"127.0.0.1:{free_fixed_port()}")
    stopped = _run(env, "login", "--access-key", KEY, code=1, stdin="x\n")
    assert "error: UNAVAILABLE:" in stopped.stderr
    assert "Traceback" not in stopped.stderr


def test_a_usage_error_shows_the_commands_own_usage(tmp_path: Path) -> None:
    env = _env(tmp_path, "127.0.0.1:1")
    refused = _run(env, "serve", "--export-format", "xml", code=2)
    assert refused.stderr.startswith("usage: auditline serve")
    assert "auditline serve: error: --export-format must be one of" in refused.stderr


def test_sessions_live_under_xdg_config_home(serve: ServeFactory, tmp_path: Path) -> None:
    process = serve(env=ENV)
    env = _env(tmp_path, process.target, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    del env["AUDITLINE_CONFIG_DIR"]
    _run(env, "login", "--access-key", KEY, code=0, stdin=SECRET + "\n")
    assert process.target in json.loads(
        (tmp_path / "xdg" / "auditline" / "sessions.json").read_text()
    )


def test_tail_prints_a_header_first(serve: ServeFactory, tmp_path: Path) -> None:
    process = serve(env=ENV)
    env = _env(tmp_path, process.target)
    _run(env, "login", "--access-key", KEY, code=0, stdin=SECRET + "\n")
    tail = subprocess.Popen(
        [sys.executable, "-m", "auditline.client.cli", "events", "tail"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert tail.stdout is not None
        assert tail.stdout.readline().split() == [
            "SEQUENCE",
            "EVENT_NAME",
            "ACCOUNT_NAME",
            "RESPONSE_STATUS",
        ]
    finally:
        tail.kill()
        tail.wait(10)


def test_the_cli_reaches_a_mutual_tls_server(serve: ServeFactory, tmp_path: Path) -> None:
    """It could reach only a plaintext server (found by a helper)."""
    pki = make_pki(tmp_path)
    process = serve(*pki.mutual_tls_args, env=ENV)
    env = _env(
        tmp_path,
        process.target,
        AUDITLINE_CA_CERT=str(pki.ca_cert),
        AUDITLINE_CLIENT_CERT=str(pki.client_cert),
        AUDITLINE_CLIENT_KEY=str(pki.client_key),
    )
    _run(env, "login", "--access-key", KEY, code=0, stdin=SECRET + "\n")
    listed = _run(env, "bucket", "list", "--json", code=0)
    assert "auditline-audit-logs" in listed.stdout
    # A key without its certificate (gRPC's core aborted on it), and no certificate at
    # all (the server refuses): messages, not tracebacks.
    half = _run({**env, "AUDITLINE_CLIENT_CERT": ""}, "bucket", "list", code=1)
    assert "--client-cert and --client-key go together" in half.stderr
    without = {k: v for k, v in env.items() if not k.startswith("AUDITLINE_CLIENT_")}
    refused = _run(without, "bucket", "list", code=1)
    assert "Traceback" not in refused.stderr
