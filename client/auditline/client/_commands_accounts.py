"""`auditline account …`: service accounts, their role and permissions."""

from __future__ import annotations

import argparse

from auditline.account.v1 import service_account_pb2
from auditline.client._client import Client
from auditline.client._command_parsers import (
    Command,
    SubParsers,
    add_command,
    add_group,
    resource_name,
)
from auditline.client._output import print_deleted, print_message

__all__ = ["add_account_commands"]

_COLUMNS = ("name", "display_name", "access_key", "role", "enabled")
_ROLES = {
    "admin": service_account_pb2.ROLE_ADMIN,
    "auditor": service_account_pb2.ROLE_AUDITOR,
    "standard": service_account_pb2.ROLE_STANDARD,
}


def _create(client: Client, args: argparse.Namespace) -> None:
    response = client.accounts.CreateServiceAccount(
        service_account_pb2.CreateServiceAccountRequest(
            service_account=service_account_pb2.ServiceAccount(
                display_name=args.name,
                description=args.description,
                role=_ROLES[args.role],
                permissions=[resource_name("permissions", p) for p in args.permission],
            )
        )
    )
    if args.json:
        print_message(response, as_json=True)
        return
    print_message(response.service_account, as_json=False, columns=_COLUMNS)
    # The server keeps only a hash of the secret: this is the one chance to see it.
    print(f"secret key (shown once, keep it safe): {response.secret_key}")


def _list(client: Client, args: argparse.Namespace) -> None:
    response = client.accounts.ListServiceAccounts(
        service_account_pb2.ListServiceAccountsRequest(page_size=1000)
    )
    print_message(response, as_json=args.json, rows=response.service_accounts, columns=_COLUMNS)


def _delete(client: Client, args: argparse.Namespace) -> None:
    client.accounts.DeleteServiceAccount(
        service_account_pb2.DeleteServiceAccountRequest(
            name=resource_name("serviceAccounts", args.id)
        )
    )
    print_deleted(resource_name("serviceAccounts", args.id), as_json=args.json)


def _by_name(method: str) -> Command:
    # Get, Enable and Disable share a shape: `{method}Request(name=…)` answered with
    # the service account.
    def run(client: Client, args: argparse.Namespace) -> None:
        request_type = getattr(service_account_pb2, f"{method}Request")
        response = getattr(client.accounts, method)(
            request_type(name=resource_name("serviceAccounts", args.id))
        )
        print_message(response.service_account, as_json=args.json, columns=_COLUMNS)

    return run


def add_account_commands(subparsers: SubParsers) -> None:
    """`auditline account create|list|get|enable|disable|delete`."""
    account = add_group(subparsers, "account", "service accounts")
    parser = add_command(account, "create", _create, "create a service account")
    parser.add_argument("name")
    parser.add_argument("--description", default="")
    parser.add_argument("--role", choices=sorted(_ROLES), default="standard")
    parser.add_argument("--permission", action="append", default=[], help="permission id")
    add_command(account, "list", _list, "list service accounts")
    for verb, method in (
        ("get", "GetServiceAccount"),
        ("enable", "EnableServiceAccount"),
        ("disable", "DisableServiceAccount"),
    ):
        add_command(account, verb, _by_name(method), f"{verb} a service account").add_argument("id")
    add_command(account, "delete", _delete, "delete a service account").add_argument("id")
