"""`auditline verify`, `auditline prove` and `auditline verify-proof`: proving the log.

Exit codes: 0 when everything is proven, 1 when something is not (tampering, or a
proof that fails), 2 on a usage error (a location or key that cannot be read).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import orjson

from auditline.interceptor._leaf import LineError
from auditline.interceptor._locations import open_location
from auditline.interceptor._merkle import ProofError
from auditline.interceptor._note import NoteError, VerifierKey
from auditline.interceptor._proofs import prove, verify_proof
from auditline.interceptor._verify import Verifier
from auditline.interceptor._verify_expected import expected_from_report
from auditline.interceptor._verify_report import KINDS, Report

__all__ = ["add_integrity_parsers"]


def add_integrity_parsers(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    verify = subparsers.add_parser(
        "verify",
        help="prove an exported audit log complete and unaltered",
        description="Check every node's exported log against its signed checkpoints: "
        "files, events, order, gaps and signatures. LOCATION is a directory whose "
        "relative paths are the object keys, or s3://BUCKET[/PREFIX]?endpoint=URL&region=R. "
        "Exit 0 when everything is proven, 1 when something is not, 2 on a usage error.",
    )
    verify.add_argument("location")
    _keys_argument(verify)
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--since", type=_time, help="only manifests written at or after (RFC 3339)")
    verify.add_argument("--until", type=_time, help="only manifests written up to (RFC 3339)")
    verify.add_argument(
        "--expect",
        type=Path,
        metavar="REPORT",
        help="the --json report of an earlier run, kept where the bucket's writers cannot "
        "reach it: each log it names must still be here and prove the checkpoint it ended "
        "with then (a log cut short or removed since shows)",
    )
    verify.set_defaults(handler=_verify_command)

    prove_parser = subparsers.add_parser(
        "prove",
        help="write a self-contained proof that one event is in the signed log",
        description="Find the event in LOCATION's files and print its proof (JSON): the "
        "line, its leaf index, the inclusion path and the signed checkpoint.",
    )
    prove_parser.add_argument("event_id")
    prove_parser.add_argument("location")
    _keys_argument(prove_parser)
    prove_parser.add_argument("--output", type=Path, help="write the proof here (default stdout)")
    prove_parser.set_defaults(handler=_prove_command)

    check = subparsers.add_parser(
        "verify-proof",
        help="check a proof written by `auditline prove`, offline",
        description="Check a proof against trusted public keys; print the proven event.",
    )
    check.add_argument("proof", type=Path)
    _keys_argument(check)
    check.set_defaults(handler=_verify_proof_command)


def _keys_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--public-key",
        action="append",
        type=Path,
        required=True,
        metavar="FILE",
        help="file of trusted verifier keys (<name>+<id>+<key>, one a line); repeatable",
    )


def _time(text: str) -> datetime.datetime:
    value = datetime.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def _keys(paths: list[Path]) -> list[VerifierKey]:
    keys = []
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                keys.append(VerifierKey.parse(line))
    return keys


def _fail(command: str, message: str) -> int:
    print(f"auditline {command}: {message}", file=sys.stderr)
    return 2


def _verify_command(args: argparse.Namespace) -> int:
    try:
        keys = _keys(args.public_key)
        location = open_location(args.location)
        expected = (
            expected_from_report(orjson.loads(args.expect.read_bytes())) if args.expect else []
        )
        progress = _Progress() if sys.stderr.isatty() and not args.json else None
        verifier = Verifier(
            location,
            keys,
            since=args.since,
            until=args.until,
            progress=progress or (lambda events: None),
            expected=expected,
        )
    except (OSError, ValueError) as exc:  # orjson's errors are ValueErrors
        return _fail("verify", str(exc))
    try:
        report = verifier.run()
    except Exception as exc:  # an unreachable store, say: not a verdict on the log
        return _fail("verify", f"cannot read {args.location}: {type(exc).__name__}: {exc}")
    if progress is not None:
        progress.done()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print(report)
    return 0 if report.ok else 1


def _print(report: Report) -> None:
    for node in report.nodes:
        print(
            f"{node.origin}{f' under {node.prefix}' if node.prefix else ''}: "
            f"events {node.first_seq}..{node.last_seq}, {node.events} read from "
            f"{node.files} files, tree size {node.tree_size} root {node.root}, "
            f"{node.checkpoints} checkpoints signed by {', '.join(node.keys) or 'no trusted key'}"
        )
        for skipped in node.not_here:
            print(
                f"  events {skipped.first_seq}..{skipped.last_seq} not here: the node signed "
                "that this log goes on after them (exported to another destination)"
            )
        if node.dropped_before_logging:
            print(
                f"  {node.dropped_before_logging} events dropped before logging (DATA_LOSS markers)"
            )
    for finding in report.findings:
        where = f" {finding.key}" if finding.key else ""
        span = f" events {finding.first_seq}..{finding.last_seq}" if finding.first_seq else ""
        print(f"NOT PROVEN {finding.kind}:{where}{span}: {finding.detail or KINDS[finding.kind]}")
    if not report.nodes:
        print("no manifests found (in the window, if one was given): nothing is proven")
    verdict = "verified" if report.ok else "NOT verified"
    rate = report.events / report.seconds if report.seconds else 0
    print(f"{verdict}: {report.events} events in {report.seconds:.2f}s ({rate:,.0f}/s)")


class _Progress:
    def __call__(self, events: int) -> None:
        print(f"\r{events:,} events verified", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        print(file=sys.stderr)


def _prove_command(args: argparse.Namespace) -> int:
    try:
        keys = _keys(args.public_key)
        location = open_location(args.location)
    except (OSError, ValueError) as exc:
        return _fail("prove", str(exc))
    try:
        proof = prove(location, args.event_id, keys)
    except (ProofError, NoteError) as exc:
        print(f"auditline prove: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(proof, indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _verify_proof_command(args: argparse.Namespace) -> int:
    try:
        keys = _keys(args.public_key)
        proof = orjson.loads(args.proof.read_bytes())
    except (OSError, ValueError) as exc:
        return _fail("verify-proof", str(exc))
    if not isinstance(proof, dict):  # `[]` crashed it with a traceback (found by a helper)
        print("NOT PROVEN: the proof is not a JSON object")
        return 1
    try:
        event = verify_proof(proof, keys)
    except (
        ProofError,
        NoteError,
        LineError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,  # a field of the wrong type (a number where a line goes)
    ) as exc:
        print(f"NOT PROVEN: {exc}")
        return 1
    print(
        f"proven: event {event.get('EventId')} ({event.get('EventName')}, sequence "
        f"{event.get('Sequence')}) is leaf {proof['leaf_index']} of {proof['origin']} "
        f"at tree size {proof['tree_size']}"
    )
    return 0
