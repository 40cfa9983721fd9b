"""`auditline serve` as users run it: a subprocess reached through grpcurl and stubs."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auditline.account.v1 import auth_pb2, auth_pb2_grpc, bucket_pb2, bucket_pb2_grpc
from auditline.interceptor import hmac_value
from auditline.server import Settings
from auditline.server.node import server_credentials
from tests.conftest import ServeFactory
from tests.contract.test_contract import EXPECTED_METHODS
from tests.support.certs import make_pki
from tests.support.exported import exported_events
from tests.support.serve import ServeProcess

Grpcurl = Callable[..., str]


def _health_stub(channel: grpc.Channel) -> Any:
    # The health stubs' type stubs leave out the RPC attributes.
    return health_pb2_grpc.HealthStub(channel)


def test_grpcurl_lists_every_service_through_reflection_only(
    serve: ServeFactory, grpcurl: Grpcurl
) -> None:
    server = serve()
    listed = set(grpcurl(server.target, "list").split())
    assert set(EXPECTED_METHODS) <= listed
    assert {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= listed
    for service, methods in EXPECTED_METHODS.items():
        described = set(grpcurl(server.target, "list", service).split())
        assert described == {f"{service}.{m}" for m in methods}


def test_grpcurl_describes_messages_and_options(serve: ServeFactory, grpcurl: Grpcurl) -> None:
    server = serve()
    described = grpcurl(server.target, "describe", "auditline.account.v1.AuthenticateRequest")
    assert "secret_key" in described
    assert "REDACTION_MODE_REMOVE" in described
    assert "ACTIVITY_CREATE" in grpcurl(
        server.target, "describe", "auditline.account.v1.BucketService.CreateBucket"
    )


def test_grpcurl_health_check_is_serving(serve: ServeFactory, grpcurl: Grpcurl) -> None:
    server = serve()
    assert json.loads(grpcurl(server.target, "grpc.health.v1.Health/Check")) == {
        "status": "SERVING"
    }
    answer = grpcurl(
        "-d",
        '{"service": "auditline.account.v1.BucketService"}',
        server.target,
        "grpc.health.v1.Health/Check",
    )
    assert json.loads(answer) == {"status": "SERVING"}


def test_unknown_methods_answer_unimplemented_and_server_keeps_serving(
    serve: ServeFactory,
) -> None:
    server = serve()
    with grpc.insecure_channel(server.target) as channel:
        unknown: Any = channel.unary_unary("/auditline.account.v1.BucketService/NoSuchMethod")
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as caught:
                unknown(b"", timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        health = _health_stub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == (
            health_pb2.HealthCheckResponse.SERVING
        )


def test_sigterm_reports_not_serving_then_exits_cleanly(serve: ServeFactory) -> None:
    server = serve("--shutdown-grace", "2")
    with grpc.insecure_channel(server.target) as channel:
        # wait_for_ready: a first connection attempt refused (seen once in CI, with the
        # server logged as listening) is retried; a server that died still fails.
        watch = _health_stub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True
        )
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        server.proc.send_signal(15)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert server.proc.wait(timeout=20) == 0
    log = server.log()
    assert "received SIGTERM" in log
    assert "stopped" in log
    assert "Traceback" not in log


def test_signals_in_a_burst_stop_the_server(serve: ServeFactory) -> None:
    """Its handler set a threading.Event: a second signal while the first one's wake-up
    held the Event's lock deadlocked the main thread, and the server ignored every
    signal after (Ctrl-C twice; `timeout` forwarding a SIGTERM that `pkill` also sent)."""
    server = serve()
    for _ in range(200):
        server.proc.send_signal(15)
        server.proc.send_signal(2)
    assert server.proc.wait(timeout=30) == 0
    assert "stopped" in server.log()


def test_sigint_exits_cleanly(serve: ServeFactory) -> None:
    server = serve()
    server.proc.send_signal(2)
    assert server.proc.wait(timeout=20) == 0


def test_plaintext_is_announced_in_the_startup_log(serve: ServeFactory) -> None:
    server = serve()
    assert "PLAINTEXT" in server.log()


def test_settings_come_from_environment_variables(serve: ServeFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "from-env"
    server = serve(
        env={"AUDITLINE_DATA_DIR": str(data_dir), "AUDITLINE_SHUTDOWN_GRACE": "2.5"},
        data_dir=tmp_path / "ignored",
    )
    # The flag given by the fixture wins over the variable; the grace comes from the env.
    assert (tmp_path / "ignored" / "node-id").exists()
    assert not data_dir.exists()
    assert server.terminate() == 0
    assert "in-flight calls get 2.5s to finish" in server.log()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "x.pem"], "--tls-cert and --tls-key go together"),
        (["--listen", "nowhere"], "--listen wants HOST:PORT"),
        (["--max-workers", "0"], "--max-workers must be at least 1"),
        (["--export-format", "ocsf-parquet"], "needs --export-lake-region and"),
        (["--export-ocsf-version", "1.2.0"], "--export-ocsf-version must be one of"),
        # Negative retention days left the audit files unlocked at once; a negative or
        # NaN detection interval turned detection off silently (found by a helper).
        (["--export-retention-days", "-5"], "--export-retention-days must be a number"),
        (["--detection-interval", "nan"], "--detection-interval must be a number"),
        (["--token-ttl", "nan"], "--token-ttl must be a number"),
    ],
)
def test_bad_settings_are_usage_errors(args: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "auditline.client.cli", "serve", "--data-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_bad_environment_variable_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "auditline.client.cli", "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "", "AUDITLINE_MAX_WORKERS": "many"},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "--max-workers: invalid int value: 'many'" in result.stderr


def test_a_bad_or_empty_server_variable_leaves_other_commands_working(tmp_path: Path) -> None:
    """It stopped every `auditline` command with serve's usage (found by a helper);
    an empty one (as compose files write them) is unset."""
    env = {"PATH": "", "AUDITLINE_EXPORT_INTERVAL": "5m", "AUDITLINE_MAX_WORKERS": ""}
    for command in (["catalog"], ["serve", "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "auditline.client.cli", *command],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=env,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr


def _health(channel: grpc.Channel) -> int:
    stub = _health_stub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status)


def test_tls(serve: ServeFactory, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    server = serve("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    assert "(TLS)" in server.log()
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
    with grpc.secure_channel(server.target, credentials) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError):
        _health(channel)


def test_swapped_tls_files_are_named_at_start(tmp_path: Path) -> None:
    """The certificate given as the key (and the key as the certificate) stopped the
    start with "another process has the port" (found by a helper)."""
    pki = make_pki(tmp_path)
    swapped = ServeProcess(
        tmp_path / "data",
        args=["--tls-cert", str(pki.server_key), "--tls-key", str(pki.server_cert)],
    )
    try:
        with pytest.raises(RuntimeError, match="are not a certificate") as failed:
            swapped.start()
        assert swapped.proc.wait(10) == 1
        assert "another process has the port" not in str(failed.value)
    finally:
        swapped.stop()


def test_mutual_tls_requires_a_client_certificate(serve: ServeFactory, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    server = serve(*pki.mutual_tls_args)
    assert "(mutual TLS)" in server.log()
    ca = pki.ca_cert.read_bytes()
    with_client_cert = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=pki.client_key.read_bytes(),
        certificate_chain=pki.client_cert.read_bytes(),
    )
    with grpc.secure_channel(server.target, with_client_cert) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
    without = grpc.ssl_channel_credentials(root_certificates=ca)
    with grpc.secure_channel(server.target, without) as channel, pytest.raises(grpc.RpcError):
        _health(channel)


def test_every_call_to_the_server_is_audited(serve: ServeFactory) -> None:
    server = serve("--audit-policy", "*=all")  # health checks one by one too
    with grpc.insecure_channel(server.target) as channel:
        stub = bucket_pb2_grpc.BucketServiceStub(channel)
        with pytest.raises(grpc.RpcError):
            stub.GetBucket(bucket_pb2.GetBucketRequest(name="buckets/logs"), timeout=10)
        _health_stub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert server.terminate() == 0
    # The calls' events (each start also records its audit policy in the settings log).
    events = [e for e in exported_events(server.data_dir) if e["EventName"] != "AuditPolicyApplied"]
    assert [(e["Service"], e["Method"], e["Response"]["ResponseStatus"]) for e in events] == [
        ("auditline.account.v1.BucketService", "GetBucket", "UNAUTHENTICATED"),
        ("grpc.health.v1.Health", "Check", "OK"),
    ]
    assert events[0]["Response"]["ResponseError"].startswith("missing `authorization")
    assert events[0]["Request"]["RequestParams"] == {"name": "buckets/logs"}
    assert events[1]["Activity"] == "ACTIVITY_READ"
    assert events[0]["NodeId"] == (server.data_dir / "node-id").read_text().strip()
    key_file = server.data_dir / "audit-hmac.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_audit_hash_prints_the_hmac_under_the_servers_key(serve: ServeFactory) -> None:
    secret = "known-session-token-7d1e"
    server = serve()
    with grpc.insecure_channel(server.target) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        assert not stub.ValidateToken(auth_pb2.ValidateTokenRequest(token=secret), timeout=10).valid
    assert server.terminate() == 0
    log = "".join(json.dumps(e) for e in exported_events(server.data_dir))
    assert secret not in log
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "auditline.client.cli",
            "audit-hash",
            "--data-dir",
            str(server.data_dir),
        ],
        input=secret + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    digest = result.stdout.strip()
    assert digest.startswith("hmac-sha256:")
    assert f'"token": "{digest}"' in log  # the ValidateToken event holds the token's HMAC
    # Unimplemented services are not parsed; the hash is still what the log would hold.
    assert digest == hmac_value(
        bytes.fromhex((server.data_dir / "audit-hmac.key").read_text()), secret
    )


def _audit_hash(data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditline.client.cli", "audit-hash", "--data-dir", str(data_dir)],
        input="x",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **env},
    )


def test_audit_hash_without_a_key_fails_clearly(tmp_path: Path) -> None:
    result = _audit_hash(tmp_path)
    assert result.returncode == 1
    assert "no audit HMAC key" in result.stderr
    # The server's variable names the key file here too (found by a helper).
    key = tmp_path / "other.key"
    key.write_text("ab" * 32 + "\n")
    result = _audit_hash(tmp_path, AUDITLINE_AUDIT_HMAC_KEY_FILE=str(key))
    assert result.stdout.strip() == hmac_value(bytes.fromhex("ab" * 32), "x")


def test_a_relative_data_dir_keeps_objects_inside_it(tmp_path: Path) -> None:
    """`make run` serves with `./data`: its objects must land in ./data/objects."""
    process = subprocess.Popen(
        [sys.executable, "-m", "auditline.client.cli", "serve", "--listen", "127.0.0.1:0"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        from tests.support.processes import wait_for

        bucket = tmp_path / "data" / "objects" / "auditline-audit-logs"
        wait_for(
            lambda: True if bucket.exists() else None,
            timeout=30,
            what="the audit bucket in ./data/objects",
        )
    finally:
        process.terminate()
        process.wait(30)


def test_what_the_server_writes_is_its_owners_alone(serve: ServeFactory, tmp_path: Path) -> None:
    """The database and the spool's write-ahead log (every event) followed the umask
    (0644), and a data directory others may read went unsaid (found by a helper)."""
    data_dir = tmp_path / "open"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    server = serve(data_dir=data_dir)
    assert "may be read by other users (mode 755)" in server.log()
    written = [
        p
        for p in [*data_dir.glob("auditline.db*"), *(data_dir / "audit").glob("spool.db*")]
        if p.is_file()
    ]
    assert any(p.name.endswith("-wal") for p in written)
    assert all(p.stat().st_mode & 0o077 == 0 for p in written), [
        (p.name, oct(p.stat().st_mode)) for p in written
    ]
    assert server.terminate() == 0


def test_a_key_the_system_openssl_finds_weak_but_grpc_serves_is_taken(tmp_path: Path) -> None:
    """The pair check is only that: a 1024-bit RSA key (gRPC's TLS serves it) was
    refused at start by the system OpenSSL's security level (found by a helper)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "weak.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "weak.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    settings = Settings(tls_cert=tmp_path / "weak.pem", tls_key=tmp_path / "weak.key")
    assert server_credentials(settings) is not None
    swapped = Settings(tls_cert=tmp_path / "weak.key", tls_key=tmp_path / "weak.pem")
    with pytest.raises(ValueError, match="are not a certificate"):
        server_credentials(swapped)
