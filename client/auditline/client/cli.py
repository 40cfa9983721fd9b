"""The `auditline` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from auditline.client._commands import add_commands

__all__ = ["COMMAND_GROUP", "build_parser", "main"]

# Other distributions add their commands here: each entry point names a function
# taking the subparsers (auditline-server: `serve`; auditline-interceptor: `verify`).
COMMAND_GROUP = "auditline.commands"


def build_parser() -> argparse.ArgumentParser:
    """The parser of every `auditline` command."""
    parser = argparse.ArgumentParser(
        prog="auditline",
        description="The audited account service for S3-compatible object storage.",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add_commands(subparsers)
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        entry.load()(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit 0 on success, 1 when the server refused, 2 on a usage error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.parser_error = parser.error
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
