"""The parser pieces every client command shares: `--target` and `--json`, a group
of subcommands, and a command run with the logged-in client."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

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
    "connection",
    "resource_name",
]

DEFAULT_TARGET = "127.0.0.1:50051"

# Quoted: argparse's class is generic only to type checkers.
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
# What a command does with the client; printing its result is part of it.
Command: TypeAlias = Callable[[Client, argparse.Namespace], None]
# What `auditline.client.cli.main` calls: the parsed arguments in, the exit code out.
Handler: TypeAlias = Callable[[argparse.Namespace], int]


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """`--target` (the server), how to reach it over TLS, and `--json` (the output), on
    every client command."""
    parser.add_argument(
        "--target",
        default=os.environ.get("AUDITLINE_TARGET", DEFAULT_TARGET),
        help="HOST:PORT of the server (env AUDITLINE_TARGET)",
    )
    # The CLI could reach only a plaintext server (found by a helper).
    parser.add_argument(
        "--tls",
        action="store_true",
        default=bool(os.environ.get("AUDITLINE_TLS")),
        help="connect with TLS, trusting the system's roots (env AUDITLINE_TLS)",
    )
    for flag, env, what in (
        (
            "--ca-cert",
            "AUDITLINE_CA_CERT",
            "PEM file of the CA that signed the server's certificate",
        ),
        ("--client-cert", "AUDITLINE_CLIENT_CERT", "PEM certificate for mutual TLS"),
        ("--client-key", "AUDITLINE_CLIENT_KEY", "PEM private key for mutual TLS"),
    ):
        parser.add_argument(
            flag, type=Path, default=os.environ.get(env) or None, help=f"{what} (env {env})"
        )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def connection(args: argparse.Namespace) -> dict[str, Any]:
    """The `Client` options that say how to reach `args.target` (TLS or not)."""
    if (args.client_cert is None) != (args.client_key is None):
        # gRPC's core aborts the process on a key without its certificate.
        raise ValueError("--client-cert and --client-key go together: give both or neither")
    return {
        "tls": bool(args.tls or args.ca_cert or args.client_cert),
        "root_certificates": _read(args.ca_cert),
        "certificate_chain": _read(args.client_cert),
        "private_key": _read(args.client_key),
    }


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def _run_logged_in(command: Command) -> Handler:
    # A refusal is an answer, not a crash: `cli.main` prints its reason and exits 1.
    def handler(args: argparse.Namespace) -> int:
        with logged_in_client(args.target, **connection(args)) as client:
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


def resource_name(collection: str, given: str) -> str:
    """`collection/ID` from an id, or from the full name as `list` prints it (given
    whole, it was doubled: buckets/buckets/x; found by a helper)."""
    return given if given.startswith(collection + "/") else f"{collection}/{given}"
