"""C2SP signed notes with Ed25519 keys, and the checkpoints (signed tree heads) in them.

- c2sp.org/signed-note: a text ending in a newline, a blank line, then signature lines
  `— <key name> <base64(key ID || signature)>`; the key ID is the first four bytes of
  SHA-256(key name || 0x0A || 0x01 || public key).
- c2sp.org/tlog-checkpoint: the text is `<origin>\\n<tree size>\\n<base64 root hash>\\n`.

Keys are kept in the formats of Go's golang.org/x/mod/sumdb/note, so that its tools
read them: a verifier key `<name>+<hex key ID>+<base64(0x01 || public key)>`, and a
signer key `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "Checkpoint",
    "NoteError",
    "OpenedNote",
    "SigningKey",
    "VerifierKey",
    "open_note",
]

_ED25519 = b"\x01"
_DASH = "\u2014 "


class NoteError(ValueError):
    """A note that cannot be trusted. `kind`: malformed, untrusted (no known key signed
    it) or forged (a known key's signature does not verify)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _key_id(name: str, public: bytes) -> int:
    return int.from_bytes(hashlib.sha256(name.encode() + b"\n" + _ED25519 + public).digest()[:4])


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise ValueError(f"a key name has no spaces or '+' and is not empty: {name!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VerifierKey:
    """A public key that checks signatures: its name, its ID, the Ed25519 key."""

    name: str
    key_id: int
    public: bytes

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        try:
            name, key_hex, encoded = text.strip().split("+", 2)
            raw = base64.b64decode(encoded, validate=True)
            key_id = int(key_hex, 16)
        except (ValueError, binascii.Error):
            raise ValueError("a verifier key is <name>+<hex id>+<base64 key>") from None
        if len(key_hex) != 8 or raw[:1] != _ED25519 or len(raw) != 33:
            raise ValueError("only Ed25519 verifier keys (type 0x01, 32 bytes) are known")
        _check_name(name)
        if _key_id(name, raw[1:]) != key_id:
            raise ValueError("the verifier key's ID does not match its name and key")
        return cls(name=name, key_id=key_id, public=raw[1:])

    @property
    def text(self) -> str:
        encoded = base64.b64encode(_ED25519 + self.public).decode()
        return f"{self.name}+{self.key_id:08x}+{encoded}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, text)
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """An Ed25519 key that signs notes under a name."""

    def __init__(self, name: str, private: Ed25519PrivateKey) -> None:
        _check_name(name)
        self.name = name
        self._private = private
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = VerifierKey(name=name, key_id=_key_id(name, public), public=public)

    @classmethod
    def generate(cls, name: str) -> SigningKey:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def parse(cls, text: str) -> SigningKey:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise ValueError("a signer key is PRIVATE+KEY+<name>+<hex id>+<base64 key>")
        raw = base64.b64decode(parts[4], validate=True)
        if raw[:1] != _ED25519 or len(raw) != 33:
            raise ValueError("only Ed25519 signer keys are known")
        key = cls(parts[2], Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if f"{key.verifier.key_id:08x}" != parts[3]:
            raise ValueError("the signer key's ID does not match its name and key")
        return key

    @property
    def text(self) -> str:
        seed = self._private.private_bytes_raw()
        encoded = base64.b64encode(_ED25519 + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id:08x}+{encoded}"

    @classmethod
    def load_or_create(cls, path: Path, name: str) -> SigningKey:
        """The key in `path`; a new one written there (mode 0600) when there is none."""
        if not path.exists():
            key = cls.generate(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL: two processes never overwrite each other's key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(key.text + "\n")
        return cls.parse(path.read_text())

    def sign_note(self, text: str) -> str:
        """The signed note of `text` (which ends in a newline and has no blank line)."""
        if not text.endswith("\n") or "\n\n" in text:
            raise ValueError("a note's text ends in a newline and has no blank line")
        signature = self._private.sign(text.encode())
        blob = base64.b64encode(self.verifier.key_id.to_bytes(4) + signature).decode()
        return f"{text}\n{_DASH}{self.name} {blob}\n"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OpenedNote:
    """A signed note's text, and the trusted key that signed it."""

    text: str
    signer: VerifierKey


def open_note(note: str, keys: Sequence[VerifierKey]) -> OpenedNote:
    """The text of a signed note and the trusted key that signed it; `NoteError` when
    no trusted key signed it, or a trusted key's signature fails (c2sp.org/signed-note)."""
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("malformed", "not a signed note: no blank line before signatures")
    text, lines = note[: split + 1], note[split + 2 :].splitlines()
    if not lines or any(c < " " and c != "\n" for c in note):
        raise NoteError("malformed", "a signed note has signature lines and no control characters")
    known = {(k.name, k.key_id): k for k in keys}
    trusted: VerifierKey | None = None
    for line in lines:
        if not line.startswith(_DASH):
            raise NoteError("malformed", f"not a signature line: {line[:80]!r}")
        name, _, blob = line[len(_DASH) :].partition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except binascii.Error:
            raise NoteError("malformed", "a signature is not base64") from None
        if len(raw) < 5:
            raise NoteError("malformed", "a signature is too short")
        key = known.get((name, int.from_bytes(raw[:4])))
        if key is None:
            continue  # another party's signature: ignored
        if not key.verify(text.encode(), raw[4:]):
            raise NoteError("forged", f"the signature of {name} does not verify")
        trusted = trusted or key
    if trusted is None:
        names = ", ".join(line[len(_DASH) :].partition(" ")[0] for line in lines)
        raise NoteError("untrusted", f"signed only by keys not trusted here ({names})")
    return OpenedNote(text=text, signer=trusted)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A signed tree head: the log's origin, its size and root (c2sp.org/tlog-checkpoint)."""

    origin: str
    size: int
    root: bytes

    @property
    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        try:
            origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)
        except (IndexError, ValueError, binascii.Error):
            raise NoteError("malformed", "a checkpoint is origin, size and root hash") from None
        if not origin or size < 0 or len(root) != 32 or str(size) != lines[1]:
            raise NoteError("malformed", "a checkpoint is origin, size and root hash")
        return cls(origin=origin, size=size, root=root)
