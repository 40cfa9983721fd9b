"""C2SP signed notes and checkpoints: the reference vector of Go's sumdb/note, and the
ways a note is refused."""

from __future__ import annotations

import pytest

from auditline.interceptor._merkle import root_of
from auditline.interceptor._note import Checkpoint, NoteError, SigningKey, VerifierKey, open_note

# golang.org/x/mod/sumdb/note's example: Ed25519 is deterministic, so signing the same
# text with the same key must give the same note, byte for byte.
SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
NOTE = (
    TEXT + "\n— PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_the_reference_note_signs_and_opens() -> None:
    signer = SigningKey.parse(SIGNER)
    assert signer.verifier.text == VERIFIER
    assert signer.text == SIGNER
    assert signer.sign_note(TEXT) == NOTE
    opened = open_note(NOTE, [VerifierKey.parse(VERIFIER)])
    assert opened.text == TEXT
    assert opened.signer.name == "PeterNeumann"


def test_a_changed_note_is_forged_and_an_unknown_key_untrusted() -> None:
    key = VerifierKey.parse(VERIFIER)
    with pytest.raises(NoteError) as forged:
        open_note(NOTE.replace("cryptography", "cryptographY"), [key])
    assert forged.value.kind == "forged"
    with pytest.raises(NoteError) as untrusted:
        open_note(NOTE, [SigningKey.generate("someone.else/log").verifier])
    assert untrusted.value.kind == "untrusted"
    # Same name, other key: not the known key, so untrusted (never "verified").
    impostor = SigningKey.generate("PeterNeumann")
    with pytest.raises(NoteError) as other:
        open_note(impostor.sign_note(TEXT), [key])
    assert other.value.kind == "untrusted"
    for bad in ("", TEXT, NOTE.replace("\n\n", "\n"), NOTE + "\x01"):
        with pytest.raises(NoteError):
            open_note(bad, [key])


def test_verifier_keys_are_checked() -> None:
    for bad in (
        VERIFIER.replace("c74f20a3", "c74f20a4"),  # wrong ID
        VERIFIER.replace("+ARpc", "+AhRpc"),
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(ValueError, match=r"verifier key|key name"):
            VerifierKey.parse(bad)


def test_checkpoints_round_trip() -> None:
    key = SigningKey.generate("auditline.example/node-1")
    checkpoint = Checkpoint(origin="auditline.example/node-1", size=3, root=root_of([b"x" * 32]))
    note = key.sign_note(checkpoint.text)
    assert Checkpoint.parse(open_note(note, [key.verifier]).text) == checkpoint
    for bad in ("o\n-1\nAAAA\n", "o\n01\n" + checkpoint.text.split("\n")[2] + "\n", "o\n1\n"):
        with pytest.raises(NoteError):
            Checkpoint.parse(bad)
