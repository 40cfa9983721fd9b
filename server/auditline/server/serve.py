"""`auditline serve`: run the server until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from auditline.server.app import AuditlineServer
from auditline.server.config import ConfigError, Settings, add_arguments, settings_from_args

__all__ = ["add_serve_parser", "run"]

log = logging.getLogger("auditline.server")


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


def _serve_command(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        args.parser_error(str(exc))
    return run(settings)


def run(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT, then shut down gracefully; return the exit code."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = AuditlineServer(settings)
    port = server.start()
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
    stop.wait()
    log.info("health NOT_SERVING; in-flight calls get %.1fs to finish", settings.shutdown_grace)
    server.stop()
    log.info("stopped")
    return 0
