"""`auditline permission …`: which buckets an account may read or write."""

from __future__ import annotations

import argparse

from auditline.account.v1 import permission_pb2
from auditline.client._client import Client
from auditline.client._command_parsers import SubParsers, add_command, add_group
from auditline.client._output import print_message

__all__ = ["add_permission_commands"]

_COLUMNS = ("name", "display_name", "bucket_scope", "bucket_prefix", "bucket_names", "access")
_ACCESS = {
    "read": permission_pb2.ACCESS_READ,
    "write": permission_pb2.ACCESS_WRITE,
    "read-write": permission_pb2.ACCESS_READ_WRITE,
}


def _create(client: Client, args: argparse.Namespace) -> None:
    permission = permission_pb2.Permission(display_name=args.name, access=_ACCESS[args.access])
    # The parser makes exactly one of --all-buckets, --prefix and --bucket given.
    if args.all_buckets:
        permission.bucket_scope = permission_pb2.BUCKET_SCOPE_ALL
    elif args.prefix:
        permission.bucket_scope = permission_pb2.BUCKET_SCOPE_PREFIX
        permission.bucket_prefix = args.prefix
    else:
        permission.bucket_scope = permission_pb2.BUCKET_SCOPE_NAMES
        permission.bucket_names.extend(args.bucket)
    response = client.permissions.CreatePermission(
        permission_pb2.CreatePermissionRequest(permission=permission, permission_id=args.id or "")
    )
    print_message(response.permission, as_json=args.json, columns=_COLUMNS)


def _list(client: Client, args: argparse.Namespace) -> None:
    response = client.permissions.ListPermissions(
        permission_pb2.ListPermissionsRequest(page_size=1000)
    )
    print_message(response, as_json=args.json, rows=response.permissions, columns=_COLUMNS)


def _get(client: Client, args: argparse.Namespace) -> None:
    response = client.permissions.GetPermission(
        permission_pb2.GetPermissionRequest(name=f"permissions/{args.id}")
    )
    print_message(response.permission, as_json=args.json, columns=_COLUMNS)


def _delete(client: Client, args: argparse.Namespace) -> None:
    client.permissions.DeletePermission(
        permission_pb2.DeletePermissionRequest(name=f"permissions/{args.id}", force=args.force)
    )
    print(f"deleted permissions/{args.id}")


def add_permission_commands(subparsers: SubParsers) -> None:
    """`auditline permission create|list|get|delete`."""
    permission = add_group(subparsers, "permission", "bucket permissions")
    parser = add_command(permission, "create", _create, "create a permission")
    parser.add_argument("name")
    parser.add_argument("--id")
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("--all-buckets", action="store_true")
    scope.add_argument("--prefix")
    scope.add_argument("--bucket", action="append")
    parser.add_argument("--access", choices=sorted(_ACCESS), required=True)
    add_command(permission, "list", _list, "list permissions")
    add_command(permission, "get", _get, "show a permission").add_argument("id")
    parser = add_command(permission, "delete", _delete, "delete a permission")
    parser.add_argument("id")
    parser.add_argument("--force", action="store_true", help="even when accounts are bound to it")
