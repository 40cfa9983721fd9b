"""Proving the log: sign checkpoints while exporting, verify a bucket, prove one event.

    from auditline.interceptor.integrity import Notary, SigningKey

    key = SigningKey.generate("example/node-1")
    exporter = Exporter(config, spool, writer, node_id="node-1",
                        notary=Notary(key=key, origin="example/node-1", node_id="node-1"))

    report = Verifier(open_location("s3://bucket?endpoint=..."), [key.verifier]).run()

The formats (leaves, manifests, checkpoints, proofs) are in the README's
"Proving the log"; `auditline verify` is the same `Verifier` on the command line.
"""

from auditline.interceptor._integrity import Notary
from auditline.interceptor._locations import LocalDirectory, Location, S3Location, open_location
from auditline.interceptor._note import SigningKey, VerifierKey
from auditline.interceptor._proofs import prove, verify_proof
from auditline.interceptor._verify import Verifier
from auditline.interceptor._verify_expected import ExpectedCheckpoint, expected_from_report
from auditline.interceptor._verify_report import Finding, Report

__all__ = [
    "ExpectedCheckpoint",
    "Finding",
    "LocalDirectory",
    "Location",
    "Notary",
    "Report",
    "S3Location",
    "SigningKey",
    "Verifier",
    "VerifierKey",
    "expected_from_report",
    "open_location",
    "prove",
    "verify_proof",
]
