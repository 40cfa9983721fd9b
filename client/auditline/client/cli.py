"""The `auditline` command line."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import entry_points

import grpc

from auditline.client._command_parsers import SubParsers
from auditline.client._commands import add_commands
from auditline.errors import from_rpc_error

__all__ = ["COMMAND_GROUP", "build_parser", "main"]

# Other distributions add their commands here: each entry point names a function
# taking the subparsers (auditline-server: `serve`; auditline-interceptor: `verify`).
# An entry point named `GROUP.NAME` adds to a group of the client's instead: its
# function takes that group's subparsers (auditline-interceptor: `events.query`).
COMMAND_GROUP = "auditline.commands"


class _CommandParser(argparse.ArgumentParser):
    """A parser that, when its command runs, is the one that reports a usage error
    (`args.parser_error`): `auditline serve --export-format xml` shows serve's usage,
    not the top-level one. Subcommands' parsers are of the same class."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.set_defaults(parser_error=self.error)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every `auditline` command."""
    parser = _CommandParser(
        prog="auditline",
        description="The audited account service for S3-compatible object storage.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, too")
    # Typed as plain parsers' subparsers: the commands need nothing of the subclass.
    subparsers: SubParsers = parser.add_subparsers(  # type: ignore[assignment]
        title="commands", metavar="COMMAND", required=True
    )
    add_commands(subparsers)
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        group, _, _ = entry.name.rpartition(".")
        entry.load()(_group_subparsers(subparsers, group, entry.name) if group else subparsers)
    return parser


def _group_subparsers(subparsers: SubParsers, group: str, entry: str) -> SubParsers:
    """The subcommands of the client's group `group` (`events`), for an entry point
    that adds one (`events.query`)."""
    parser = subparsers.choices.get(group)
    # argparse keeps a parser's subcommands only among its actions.
    found = [
        action
        for action in (parser._actions if parser is not None else [])
        if isinstance(action, argparse._SubParsersAction)
    ]
    if not found:
        raise LookupError(f"{COMMAND_GROUP} entry point {entry!r}: no command group {group!r}")
    return found[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit 0 on success, 1 when the server refused or a local file or
    the connection failed, 2 on a usage error. Every such error is one message on
    stderr, never a traceback (`--debug` adds it); a bug still shows its traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except grpc.RpcError as error:  # typed by the client, or a stream's bare error
        refusal = from_rpc_error(error)
        _report(args, f"error: {refusal.code().name}: {refusal.message}")
        for field, problem in refusal.field_violations:
            print(f"  {field}: {problem}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:  # a file that cannot be read or written
        _report(args, f"auditline: {error}")
        return 1


def _report(args: argparse.Namespace, message: str) -> None:
    if getattr(args, "debug", False):
        traceback.print_exc()
    print(message, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
