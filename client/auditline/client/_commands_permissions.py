"""`auditline permission …`: which buckets an account may read or write."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from google.protobuf import json_format

from auditline.account.v1 import permission_pb2
from auditline.client._client import Client
from auditline.client._command_parsers import SubParsers, add_command, add_group, resource_name
from auditline.client._output import print_deleted, print_message

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
        permission_pb2.GetPermissionRequest(name=resource_name("permissions", args.id))
    )
    print_message(response.permission, as_json=args.json, columns=_COLUMNS)


def _delete(client: Client, args: argparse.Namespace) -> None:
    client.permissions.DeletePermission(
        permission_pb2.DeletePermissionRequest(
            name=resource_name("permissions", args.id), force=args.force
        )
    )
    print_deleted(resource_name("permissions", args.id), as_json=args.json)


def import_requests(path: Path) -> list[permission_pb2.CreatePermissionRequest]:
    """The permissions of a JSON or YAML file: a list of objects with a `Permission`'s
    fields (protobuf's JSON names or field names; enums by name) and an optional `id`.
    `ValueError` names the entry and field that cannot be read."""
    try:
        entries = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path} must hold a list of permissions (objects)")
    requests = []
    for index, entry in enumerate(entries):
        entry = dict(entry)
        permission_id = str(entry.pop("id", "") or entry.pop("permission_id", "") or "")
        try:
            permission = json_format.ParseDict(entry, permission_pb2.Permission())
        except json_format.ParseError as error:
            raise ValueError(f"{path}: entry {index}: {error}") from None
        requests.append(
            permission_pb2.CreatePermissionRequest(
                permission=permission, permission_id=permission_id
            )
        )
    return requests


def _import(client: Client, args: argparse.Namespace) -> None:
    try:
        requests = import_requests(args.file)
    except ValueError as error:
        args.parser_error(str(error))  # a usage error: exit 2, nothing sent
    response = client.permissions.BatchCreatePermissions(
        permission_pb2.BatchCreatePermissionsRequest(requests=requests)
    )
    print_message(response, as_json=args.json, rows=response.permissions, columns=_COLUMNS)


def add_permission_commands(subparsers: SubParsers) -> None:
    """`auditline permission create|import|list|get|delete`."""
    permission = add_group(subparsers, "permission", "bucket permissions")
    parser = add_command(permission, "create", _create, "create a permission")
    parser.add_argument("name")
    parser.add_argument("--id")
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("--all-buckets", action="store_true")
    scope.add_argument("--prefix")
    scope.add_argument("--bucket", action="append")
    parser.add_argument("--access", choices=sorted(_ACCESS), required=True)
    parser = add_command(
        permission,
        "import",
        _import,
        "create the permissions a JSON or YAML file lists: all of them, or none",
    )
    parser.add_argument("file", type=Path)
    add_command(permission, "list", _list, "list permissions")
    add_command(permission, "get", _get, "show a permission").add_argument("id")
    parser = add_command(permission, "delete", _delete, "delete a permission")
    parser.add_argument("id")
    parser.add_argument("--force", action="store_true", help="even when accounts are bound to it")
