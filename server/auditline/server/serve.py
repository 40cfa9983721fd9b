"""`auditline serve`: run the server until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from auditline.interceptor import hmac_value
from auditline.server.app import AuditlineServer
from auditline.server.config import (
    ENV_PREFIX,
    ConfigError,
    Settings,
    add_arguments,
    configure_logging,
    settings_from_args,
)
from auditline.server.node import load_hmac_key
from auditline.server.telemetry import telemetry_from_environment

__all__ = [
    "add_audit_hash_parser",
    "add_catalog_parser",
    "add_serve_parser",
    "add_server_parsers",
    "run",
]

log = logging.getLogger("auditline.server")


def add_server_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The server's commands, for the `auditline.commands` entry point group."""
    add_serve_parser(subparsers)
    add_catalog_parser(subparsers)
    add_detect_parser(subparsers)
    add_audit_hash_parser(subparsers)


def add_serve_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `serve` command to the CLI."""
    parser = subparsers.add_parser(
        "serve",
        help="run the audited account service",
        description="Run the audited account service. Every flag also reads an AUDITLINE_* "
        "environment variable; flags win.",
    )
    add_arguments(parser)
    parser.set_defaults(handler=_serve_command)


def add_audit_hash_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add `audit-hash`: the HMAC of a known value, to search the audit log for it."""
    parser = subparsers.add_parser(
        "audit-hash",
        help="print the hmac-sha256 of a value read from standard input",
        description="Print the value's HMAC as HMAC-redacted audit fields record it, so "
        "the audit log can be searched for a known secret. The value is read from "
        "standard input (one trailing newline dropped), never from the command line.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get(ENV_PREFIX + "DATA_DIR", "data")),
        help="the server's data directory",
    )
    key_file = os.environ.get(ENV_PREFIX + "AUDIT_HMAC_KEY_FILE")
    parser.add_argument(
        "--audit-hmac-key-file",
        type=Path,
        # As the server reads it: the same variable (a hash under another key finds
        # nothing; found by a helper).
        default=Path(key_file) if key_file else None,
        help="the key file, when the server uses --audit-hmac-key-file; "
        f"env {ENV_PREFIX}AUDIT_HMAC_KEY_FILE",
    )
    parser.set_defaults(handler=_audit_hash_command)


def add_catalog_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add `catalog`: the authoritative list of audited events, as Sigma rules."""
    parser = subparsers.add_parser(
        "catalog",
        help="print the catalog of audited events as Sigma rules",
        description="Print one Sigma rule per audited event (generated from the API "
        "contract), matching the OCSF records of the ocsf-json exporter.",
    )
    parser.add_argument("--format", choices=("yaml", "json"), default="yaml")
    parser.set_defaults(handler=_catalog_command)


def add_detect_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add `detect`: the detection rules over exported files (back-testing)."""
    parser = subparsers.add_parser(
        "detect",
        help="run the detection rules over exported audit files",
        description="Run the shipped Sigma detection rules (and your own) over the events "
        "of exported files, in either format, from a directory or an s3:// bucket, and "
        "print what they find.",
    )
    parser.add_argument("location", help="a directory, or s3://BUCKET[/PREFIX]?endpoint=URL")
    parser.add_argument(
        "--rules", action="append", type=Path, default=[], help="a directory of .yml rules"
    )
    parser.add_argument(
        "--no-shipped", action="store_true", help="only the rules of --rules directories"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(handler=_detect_command)


def _detect_command(args: argparse.Namespace) -> int:
    from auditline.interceptor import ocsf_record, read_exported
    from auditline.interceptor.integrity import open_location
    from auditline.server.detection import DetectionError, Detector, rules_text

    try:
        detector = Detector(rules_text(args.rules, shipped=not args.no_shipped))
    except DetectionError as error:
        args.parser_error(str(error))
    records = [ocsf_record(e.document) for e in read_exported(open_location(args.location))]
    found = detector.run(records)
    if args.json:
        print(json.dumps([dataclasses.asdict(d) for d in found], indent=2))
        return 0
    print("LEVEL  RULE  EVENTS")
    for detection in found:
        print(f"{detection.level}  {detection.title}  {', '.join(detection.event_ids)}")
    print(f"({len(records)} events, {detector.rules} rules, {len(found)} detections)")
    return 0


def _catalog_command(args: argparse.Namespace) -> int:
    from auditline.server.catalog import sigma_text

    sys.stdout.write(sigma_text(args.format))
    return 0


def _audit_hash_command(args: argparse.Namespace) -> int:
    settings = Settings(data_dir=args.data_dir, audit_hmac_key_file=args.audit_hmac_key_file)
    try:
        key = load_hmac_key(settings, create=False)
    except (FileNotFoundError, ValueError) as exc:
        print(f"auditline audit-hash: {exc}", file=sys.stderr)
        return 1
    value = sys.stdin.buffer.read()
    if value.endswith(b"\n"):
        value = value[:-1]
    print(hmac_value(key, value))
    return 0


def _serve_command(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        args.parser_error(str(exc))
    return run(settings)


def run(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT, then shut down gracefully; return the exit code."""
    configure_logging(settings)
    # Everything the server writes is its owner's alone: the database, the spool and
    # its write-ahead log hold the audit events (they followed the umask: 0644).
    os.umask(0o077)
    wake = _signal_pipe()

    server: AuditlineServer | None = None
    try:
        telemetry = telemetry_from_environment(os.environ)
        server = AuditlineServer(settings, tracer_provider=telemetry.tracer_provider)
        port = server.start()
    except Exception as exc:  # a missing bucket, an unreachable store, a port in use...
        log.debug("start-up failed", exc_info=True)
        log.error("cannot start: %s: %s", type(exc).__name__, exc)
        if server is not None:
            # Its audit worker and exporters stop in order: left to the process's exit,
            # the worker's supervisor started it again and it died with a traceback.
            server.stop(0)
        return 1
    host = settings.listen.rpartition(":")[0]
    security = "mutual TLS" if settings.tls_client_ca else "TLS" if settings.tls else "plaintext"
    if not settings.tls:
        log.warning("no --tls-cert/--tls-key given: serving PLAINTEXT, unencrypted")
    log.info(
        "auditline listening on %s:%d (%s), node %s, data dir %s",
        host,
        port,
        security,
        server.node_id,
        settings.data_dir,
    )
    signum = _wait_for_signal(wake)
    log.info("received %s, shutting down", signal.Signals(signum).name)
    log.info("health NOT_SERVING; in-flight calls get %.1fs to finish", settings.shutdown_grace)
    server.stop()
    telemetry.shutdown()  # the last metrics and spans
    log.info("stopped")
    return 0


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _signal_pipe() -> int:
    """A pipe that SIGTERM and SIGINT write their numbers to; its reading end.

    The Python handlers do nothing: a handler that set a `threading.Event` could
    deadlock. It runs on the main thread between two bytecodes, which may be inside
    that Event's own `wait` holding its lock. Two signals at once did it: Ctrl-C
    twice, or `kill` of a process group that `timeout` also forwards. The server
    then ignored every later signal."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _ignore)
    return read_end


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Caught, so that the default action (exit at once) is not taken."""


def _wait_for_signal(read_end: int) -> int:
    """Block until a stop signal's number is written to the pipe; return it."""
    while True:
        for number in os.read(read_end, 64):
            if number in _STOP_SIGNALS:
                return number
