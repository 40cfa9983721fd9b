"""The parser pieces every client command shares: `--target` and `--json`, a group
of subcommands, and a command run with the logged-in client."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TypeAlias

from auditline.client._client import Client
from auditline.client._sessions import logged_in_client

__all__ = [
    "DEFAULT_TARGET",
    "Command",
    "Handler",
    "SubParsers",
    "add_command",
    "add_common_options",
    "add_group",
]

DEFAULT_TARGET = "127.0.0.1:50051"

# Quoted: argparse's class is generic only to type checkers.
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
# What a command does with the client; printing its result is part of it.
Command: TypeAlias = Callable[[Client, argparse.Namespace], None]
# What `auditline.client.cli.main` calls: the parsed arguments in, the exit code out.
Handler: TypeAlias = Callable[[argparse.Namespace], int]


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """`--target` (the server) and `--json` (the output), on every client command."""
    parser.add_argument(
        "--target",
        default=os.environ.get("AUDITLINE_TARGET", DEFAULT_TARGET),
        help="HOST:PORT of the server (env AUDITLINE_TARGET)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _run_logged_in(command: Command) -> Handler:
    # A refusal is an answer, not a crash: `cli.main` prints its reason and exits 1.
    def handler(args: argparse.Namespace) -> int:
        with logged_in_client(args.target) as client:
            command(client, args)
        return 0

    return handler


def add_group(subparsers: SubParsers, name: str, help_text: str) -> SubParsers:
    """A command (`bucket`) whose subcommands (`bucket create`) are added to the result."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(title="commands", metavar="COMMAND", required=True)


def add_command(
    subparsers: SubParsers, name: str, command: Command, help_text: str
) -> argparse.ArgumentParser:
    """A command run with the logged-in client; add its own arguments to the result."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    add_common_options(parser)
    parser.set_defaults(handler=_run_logged_in(command))
    return parser
