"""The `auditline` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from auditline.client._commands import add_commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every `auditline` command."""
    parser = argparse.ArgumentParser(
        prog="auditline",
        description="The audited account service for S3-compatible object storage.",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    # The server lives in the same distribution; imported here so that the
    # client modules themselves never depend on it.
    from auditline.server.integrity_cli import add_integrity_parsers
    from auditline.server.serve import (
        add_audit_hash_parser,
        add_catalog_parser,
        add_serve_parser,
    )

    add_serve_parser(subparsers)
    add_commands(subparsers)
    add_catalog_parser(subparsers)
    add_audit_hash_parser(subparsers)
    add_integrity_parsers(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit 0 on success, 1 when the server refused, 2 on a usage error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.parser_error = parser.error
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
