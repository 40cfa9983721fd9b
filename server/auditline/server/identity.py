"""Keys, secrets and session tokens: how they are made, stored and checked.

Secret keys are stored only as salted scrypt hashes; session tokens only as
SHA-256 hashes (they are long random strings, so a fast hash is enough).
Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = [
    "MAX_ACCESS_KEY_CHARS",
    "MAX_SECRET_KEY_CHARS",
    "MAX_TOKEN_CHARS",
    "hash_secret",
    "hash_token",
    "new_access_key",
    "new_secret_key",
    "new_token",
    "verify_secret",
]

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_ACCESS_KEY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

# The longest keys and tokens a caller may send. Longer ones are refused before any
# lookup: callers choose them before anyone knows who they are, and a failed login
# copies its access key into the database and the IAM log. The keys made here are
# shorter (20, 43 and 43 characters); the bounds leave room for the first admin's
# keys chosen at start (AUDITLINE_ADMIN_*). The database keeps access keys this long.
MAX_ACCESS_KEY_CHARS = 64
MAX_SECRET_KEY_CHARS = 256
MAX_TOKEN_CHARS = 256


def new_access_key() -> str:
    """A public id: `AK` and 18 characters (90 random bits)."""
    return "AK" + "".join(secrets.choice(_ACCESS_KEY_ALPHABET) for _ in range(18))


def new_secret_key() -> str:
    """256 random bits, URL-safe text."""
    return secrets.token_urlsafe(32)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str) -> str:
    """`scrypt$N$r$p$salt$hash`, with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


_DUMMY_HASH = hash_secret(secrets.token_urlsafe(16))


def verify_secret(secret: str, stored: str | None) -> bool:
    """Whether `secret` matches `stored`; with None, burns the same time and says no.

    Checking an unknown access key costs as much as a wrong secret, so response
    times do not tell which access keys exist.
    """
    scheme, n, r, p, salt, digest = (stored or _DUMMY_HASH).split("$")
    if scheme != "scrypt":
        raise ValueError(f"unknown secret hash scheme {scheme!r}")
    computed = hashlib.scrypt(
        secret.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(computed, _unb64(digest)) and stored is not None
