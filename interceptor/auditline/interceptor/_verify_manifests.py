"""Reading a verified log's manifests: each one's checkpoint and the signed notes it
carries (its contents', that its exporter's log begins or goes on at its first
event), each checked against the trusted keys. `Verifier`'s base class, over
`BatchReading`, which reads one batch's files."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import orjson

from auditline.interceptor._integrity import (
    MANIFEST_FORMAT,
    manifest_digest,
    manifest_note_text,
    resume_text,
    start_text,
)
from auditline.interceptor._note import Checkpoint, NoteError, VerifierKey, open_note
from auditline.interceptor._verify_batch import BatchReading, SeenManifest
from auditline.interceptor._verify_shape import manifest_problem

__all__ = ["ManifestReading"]


class ManifestReading(BatchReading):
    """The state below is the verifier's, set in its constructor."""

    keys: Sequence[VerifierKey]

    def _manifest(self, key: str) -> SeenManifest | None:
        try:
            document = orjson.loads(self.location.read(key) or b"")
        except orjson.JSONDecodeError:
            document = None
        problem = manifest_problem(document)
        if problem is not None or document is None:
            self._find("malformed-manifest", "", problem or "", key=key)
            return None
        node = document["node"]
        created = datetime.datetime.fromisoformat(document["created"])
        checkpoint = None
        try:
            opened = open_note(document["checkpoint"], self.keys)
            text, signer = opened.text, f"{opened.signer.name}+{opened.signer.key_id:08x}"
            checkpoint = Checkpoint.parse(text)
        except NoteError as exc:
            kind = {"forged": "forged-checkpoint", "untrusted": "untrusted-checkpoint"}.get(
                exc.kind, "malformed-manifest"
            )
            self._find(kind, node, str(exc), key=key)
        else:
            if checkpoint.origin != document["origin"]:
                self._find("forged-checkpoint", node, "the checkpoint names another log", key=key)
                checkpoint = None
            else:
                unsigned = self._unsigned_contents(document, signer)
                if unsigned:
                    self._find("unsigned-manifest", node, unsigned, key=key)
                    if document.get("manifest") == MANIFEST_FORMAT:
                        # What it says of its files and tree is not the node's. (One
                        # written before contents were signed still proves what its
                        # checkpoint does, and its events can be proven; the finding
                        # says the rest of it is not.)
                        checkpoint = None
            document["_signer"] = signer
        return SeenManifest(key=key, document=document, checkpoint=checkpoint, created=created)

    def _unsigned_contents(self, document: dict[str, Any], signer: str) -> str:
        """Why the manifest's contents are not signed by its checkpoint's key ("" when
        they are): its `manifest_note` is missing, forged, or of other contents."""
        note = document.get("manifest_note")
        if not isinstance(note, str):
            if document.get("manifest") != MANIFEST_FORMAT:
                return f"{document.get('manifest')}: only its checkpoint is signed"
            return "it has no signed note of its contents"
        try:
            opened = open_note(note, self.keys)
        except NoteError as exc:
            return f"the note of its contents: {exc}"
        if f"{opened.signer.name}+{opened.signer.key_id:08x}" != signer:
            return "its contents are signed by another key than its checkpoint"
        digest = manifest_digest(document)
        if opened.text != manifest_note_text(origin=document["origin"], digest=digest):
            return "its contents are not the ones signed"
        return ""

    def _signed_note(self, manifest: SeenManifest, field: str) -> str | None:
        """The text of the manifest's note `field`, when the key that signed its
        checkpoint signed it too (else None)."""
        note = manifest.document.get(field)
        if not isinstance(note, str) or manifest.checkpoint is None:
            return None
        try:
            opened = open_note(note, self.keys)
        except NoteError:
            return None
        signer = f"{opened.signer.name}+{opened.signer.key_id:08x}"
        return opened.text if signer == manifest.document.get("_signer") else None

    def _starts_log(self, manifest: SeenManifest) -> bool:
        """Whether the manifest carries the signed note that its exporter's log begins
        at its first event (`start_text`)."""
        document = manifest.document
        return self._signed_note(manifest, "exporter_start") == start_text(
            origin=str(document.get("origin")),
            exporter=str(document.get("exporter")),
            first_seq=manifest.first_seq,
        )

    def _resumes(self, manifest: SeenManifest, signed: tuple[int, bytes] | None) -> bool:
        """Whether the manifest carries the signed note that the log goes on at its
        first event after `signed`, the checkpoint of the batch before it here
        (`resume_text`)."""
        if signed is None:
            return False
        document = manifest.document
        origin = str(document.get("origin"))
        return self._signed_note(manifest, "exporter_resume") == resume_text(
            origin=origin,
            exporter=str(document.get("exporter")),
            after=Checkpoint(origin=origin, size=signed[0], root=signed[1]),
            first_seq=manifest.first_seq,
        )
