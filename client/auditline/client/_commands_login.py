"""`auditline login` and `logout`: trade a service account's keys for a stored session,
and end it."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from auditline.account.v1 import auth_pb2, service_account_pb2
from auditline.client._client import Client
from auditline.client._command_parsers import (
    SubParsers,
    add_command,
    add_common_options,
    connection,
)
from auditline.client._output import print_message
from auditline.client._sessions import Session, forget_session, save_session

__all__ = ["add_login_command", "add_logout_command"]


def _login(args: argparse.Namespace) -> int:
    secret = os.environ.get("AUDITLINE_SECRET_KEY")
    if not secret:
        # Prompt without echo at a terminal; read a line when piped (scripts, tests).
        secret = (
            getpass.getpass("secret key: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
        )
    if not secret:  # the library's "give access_key and secret_key together" said less
        raise ValueError("no secret key: set AUDITLINE_SECRET_KEY or give it on standard input")
    with Client(
        args.target, access_key=args.access_key, secret_key=secret, **connection(args)
    ) as client:
        response = client.auth.Authenticate(
            auth_pb2.AuthenticateRequest(access_key=args.access_key, secret_key=secret)
        )
    path = save_session(
        args.target,
        Session(token=response.token, expires=response.expire_time.ToSeconds()),
    )
    if args.json:
        print(
            json.dumps(
                {
                    "target": args.target,
                    "service_account": response.service_account,
                    "role": service_account_pb2.Role.Name(response.role),
                    "expire_time": response.expire_time.ToJsonString(),
                    "sessions_file": str(path),
                },
                indent=2,
            )
        )
    else:
        print(
            f"logged in to {args.target} as {response.service_account} until "
            f"{response.expire_time.ToJsonString()}; session saved in {path}"
        )
    return 0


def add_login_command(subparsers: SubParsers) -> None:
    """`auditline login --access-key KEY` (the secret from the environment or stdin)."""
    parser = subparsers.add_parser(
        "login",
        help="authenticate and save the session",
        description="Authenticate with a service account's keys "
        "and save the session token (owner-only file). The secret "
        "key comes from AUDITLINE_SECRET_KEY or standard input.",
    )
    add_common_options(parser)
    parser.add_argument("--access-key", required=True)
    parser.set_defaults(handler=_login)


def _logout(client: Client, args: argparse.Namespace) -> None:
    response = client.auth.Logout(auth_pb2.LogoutRequest(service_account=args.account or ""))
    if not args.account:
        forget_session(args.target)
    if args.json:
        print_message(response, as_json=True)
    else:
        whose = args.account or "this session"
        print(f"logged out {whose} on {args.target}: {response.ended_sessions} session(s) ended")


def add_logout_command(subparsers: SubParsers) -> None:
    """`auditline logout [--account serviceAccounts/ID]`."""
    parser = add_command(
        subparsers,
        "logout",
        _logout,
        "end the stored session (its token stops working), or, for admins, every "
        "session of a service account",
    )
    parser.add_argument("--account", help="serviceAccounts/ID: end all its sessions (admins)")
