"""What a node keeps in its data directory: its id, its audit HMAC key, its checkpoint
signing key (and every verifier key it has used); and its TLS credentials."""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import ssl
import uuid
from pathlib import Path

import grpc

from auditline.interceptor.integrity import Notary, SigningKey
from auditline.server.config import Settings

log = logging.getLogger("auditline.server")

__all__ = ["Signing", "load_hmac_key", "load_signing", "prepare_data_dir", "server_credentials"]


def prepare_data_dir(path: Path) -> str:
    """Create the data directory (owner-only) and return this node's stable id. One
    that others may read is said so: its spool and database hold every event."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        log.warning(
            "the data directory %s may be read by other users (mode %o): its spool and "
            "database hold the audit events; chmod 700 it",
            path,
            path.stat().st_mode & 0o777,
        )
    node_file = path / "node-id"
    if not node_file.exists():
        node_file.write_text(uuid.uuid4().hex[:16] + "\n")
    return node_file.read_text().strip()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Signing:
    """The node's checkpoint signer, and every verifier key it has used."""

    notary: Notary
    verifier_keys: tuple[str, ...]  # the current key first


def load_signing(settings: Settings, node_id: str) -> Signing:
    """The node's checkpoint signer, and every verifier key it has used (current first).

    The key comes from --audit-signing-key-file, else DATA_DIR/audit-signing.key
    (created on first start, mode 0600). Each key ever used is listed in
    DATA_DIR/audit-verifier-keys, so that a rotated-out key still verifies the
    checkpoints it signed.
    """
    origin = f"{settings.deployment}/{node_id}"
    path = settings.audit_signing_key_file or settings.data_dir / "audit-signing.key"
    if settings.audit_signing_key_file is not None and not path.exists():
        raise FileNotFoundError(f"no audit signing key at {path}")
    key = SigningKey.load_or_create(path, origin)
    listed = settings.data_dir / "audit-verifier-keys"
    known = listed.read_text().split() if listed.exists() else []
    if key.verifier.text not in known:
        known.append(key.verifier.text)
        listed.write_text("".join(f"{k}\n" for k in known))
    return Signing(
        notary=Notary(key=key, origin=origin, node_id=node_id),
        verifier_keys=(
            key.verifier.text,
            *(k for k in reversed(known) if k != key.verifier.text),
        ),
    )


def load_hmac_key(settings: Settings, *, create: bool = True) -> bytes:
    """The audit HMAC key: from --audit-hmac-key-file, else created once in the data dir."""
    path = settings.audit_hmac_key_file or settings.data_dir / "audit-hmac.key"
    if not path.exists():
        if settings.audit_hmac_key_file is not None or not create:
            raise FileNotFoundError(f"no audit HMAC key at {path}")
        # O_EXCL: two servers sharing a data dir never overwrite each other's key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
    key = bytes.fromhex(path.read_text().strip())
    if len(key) < 16:
        raise ValueError(f"the audit HMAC key in {path} is shorter than 16 bytes")
    return key


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    """The server's TLS credentials; `ValueError` saying which file is wrong. gRPC's
    core only fails to bind, which read as a port in use (with the certificate and
    key swapped, say)."""
    assert settings.tls_cert is not None
    assert settings.tls_key is not None
    checked = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Only whether they are a pair: the system OpenSSL's security level refused keys
    # gRPC's own TLS serves (RSA-1024, found by a review helper).
    checked.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        # No password: OpenSSL would ask for an encrypted key's on the terminal, and
        # gRPC takes only plain keys.
        checked.load_cert_chain(settings.tls_cert, settings.tls_key, password=lambda: b"")
    except ssl.SSLError as exc:
        raise ValueError(
            f"--tls-cert {settings.tls_cert} and --tls-key {settings.tls_key} are not a "
            f"certificate (PEM) and its private key: {exc}"
        ) from None
    except OSError as exc:  # a missing or unreadable file
        raise ValueError(
            f"--tls-cert {settings.tls_cert} or --tls-key {settings.tls_key} cannot be "
            f"read: {exc.strerror or exc}"
        ) from None
    if settings.tls_client_ca is not None:
        try:
            checked.load_verify_locations(settings.tls_client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"--tls-client-ca {settings.tls_client_ca} is not a CA certificate (PEM): {exc}"
            ) from None
    key_pair = (settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [key_pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
