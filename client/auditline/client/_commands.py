"""The `auditline` commands that drive the service through the Python client.

Tables by default, `--json` for scripts. Exit codes: 0 success, 1 the server
refused (the message says why), 2 a usage error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from google.protobuf import duration_pb2, json_format
from google.protobuf.message import Message

from auditline.account.v1 import (
    auth_pb2,
    bucket_pb2,
    permission_pb2,
    service_account_pb2,
    usage_pb2,
)
from auditline.audit.v1 import audit_log_pb2, exporter_pb2, settings_pb2
from auditline.client._client import Client
from auditline.contract import EXPORT_COMPRESSIONS, EXPORT_FORMATS
from auditline.errors import AuditlineError

__all__ = ["add_commands"]

DEFAULT_TARGET = "127.0.0.1:50051"
Command = Callable[[Client, argparse.Namespace], Any]


# --- stored sessions ------------------------------------------------------------------


def _sessions_file() -> Path:
    base = os.environ.get("AUDITLINE_CONFIG_DIR") or Path.home() / ".config" / "auditline"
    return Path(base) / "sessions.json"


def _load_sessions() -> dict[str, Any]:
    path = _sessions_file()
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _save_session(target: str, token: str, expires: float) -> Path:
    path = _sessions_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    sessions = _load_sessions()
    sessions[target] = {"token": token, "expires": expires}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(sessions, out)
    return path


def _client(args: argparse.Namespace) -> Client:
    session = _load_sessions().get(args.target)
    if session is None or session["expires"] < time.time():
        raise SystemExit(
            f"auditline: not logged in to {args.target} (or the session "
            "expired): run `auditline login`"
        )
    return Client(args.target, token=session["token"])


# --- output ------------------------------------------------------------------------------


def _print(
    args: argparse.Namespace,
    message: Message,
    rows: Iterable[Message] | None = None,
    columns: tuple[str, ...] = (),
) -> None:
    if args.json or not columns:
        print(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2))
        return
    items = list(rows) if rows is not None else [message]
    table = [[_cell(item, column) for column in columns] for item in items]
    widths = [max([len(c), *(len(r[i]) for r in table)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(item: Message, path: str) -> str:
    value: Any = item
    repeated = False
    for part in path.split("."):
        field = value.DESCRIPTOR.fields_by_name[part]
        value = getattr(value, part)
        repeated = field.is_repeated
        if field.enum_type is not None and not repeated:
            value = field.enum_type.values_by_number[value].name.split("_", 2)[-1]
    if repeated:
        return ",".join(str(v) for v in value)
    if isinstance(value, Message):
        if value.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
            return str(value.ToJsonString())  # type: ignore[attr-defined]
        return json_format.MessageToJson(value, indent=None)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


# --- commands ----------------------------------------------------------------------------


def _retention(args: argparse.Namespace) -> bucket_pb2.Retention | None:
    if not args.retention_days:
        return None
    mode = {
        "governance": bucket_pb2.RETENTION_MODE_GOVERNANCE,
        "compliance": bucket_pb2.RETENTION_MODE_COMPLIANCE,
    }[args.retention_mode]
    return bucket_pb2.Retention(mode=mode, days=args.retention_days)


BUCKET_COLUMNS = ("name", "immutable", "default_retention.days", "audit_logging_enabled")
ACCOUNT_COLUMNS = ("name", "display_name", "access_key", "role", "enabled")
PERMISSION_COLUMNS = (
    "name",
    "display_name",
    "bucket_scope",
    "bucket_prefix",
    "bucket_names",
    "access",
)
EXPORTER_COLUMNS = (
    "name",
    "display_name",
    "bucket",
    "format",
    "compression",
    "status.state",
    "status.backlog",
    "status.last_error",
)
EVENT_COLUMNS = (
    "sequence",
    "request.request_time",
    "event_name",
    "request.account_name",
    "response.response_status",
    "request.source_ip",
)


def bucket_create(c: Client, a: argparse.Namespace) -> None:
    request = bucket_pb2.CreateBucketRequest(bucket_id=a.name, immutable=a.immutable)
    retention = _retention(a)
    if retention is not None:
        request.default_retention.CopyFrom(retention)
    _print(a, c.buckets.CreateBucket(request).bucket, columns=BUCKET_COLUMNS)


def bucket_list(c: Client, a: argparse.Namespace) -> None:
    response = c.buckets.ListBuckets(bucket_pb2.ListBucketsRequest(page_size=1000))
    _print(a, response, response.buckets, BUCKET_COLUMNS)


def bucket_get(c: Client, a: argparse.Namespace) -> None:
    _print(
        a,
        c.buckets.GetBucket(bucket_pb2.GetBucketRequest(name=f"buckets/{a.name}")).bucket,
        columns=BUCKET_COLUMNS,
    )


def bucket_delete(c: Client, a: argparse.Namespace) -> None:
    c.buckets.DeleteBucket(bucket_pb2.DeleteBucketRequest(name=f"buckets/{a.name}"))
    print(f"deleted buckets/{a.name}")


def bucket_lock(c: Client, a: argparse.Namespace) -> None:
    request = bucket_pb2.SetObjectImmutabilityRequest(name=f"buckets/{a.name}")
    retention = _retention(a)
    if retention is not None:
        request.default_retention.CopyFrom(retention)
    _print(a, c.buckets.SetObjectImmutability(request).bucket, columns=BUCKET_COLUMNS)


_ROLES = {
    "admin": service_account_pb2.ROLE_ADMIN,
    "auditor": service_account_pb2.ROLE_AUDITOR,
    "standard": service_account_pb2.ROLE_STANDARD,
}


def account_create(c: Client, a: argparse.Namespace) -> None:
    response = c.accounts.CreateServiceAccount(
        service_account_pb2.CreateServiceAccountRequest(
            service_account=service_account_pb2.ServiceAccount(
                display_name=a.name,
                description=a.description,
                role=_ROLES[a.role],
                permissions=[f"permissions/{p}" for p in a.permission],
            )
        )
    )
    if a.json:
        _print(a, response)
        return
    _print(a, response.service_account, columns=ACCOUNT_COLUMNS)
    print(f"secret key (shown once, keep it safe): {response.secret_key}")


def account_list(c: Client, a: argparse.Namespace) -> None:
    response = c.accounts.ListServiceAccounts(
        service_account_pb2.ListServiceAccountsRequest(page_size=1000)
    )
    _print(a, response, response.service_accounts, ACCOUNT_COLUMNS)


def account_delete(c: Client, a: argparse.Namespace) -> None:
    c.accounts.DeleteServiceAccount(
        service_account_pb2.DeleteServiceAccountRequest(name=f"serviceAccounts/{a.id}")
    )
    print(f"deleted serviceAccounts/{a.id}")


def _account_call(method: str) -> Command:
    def run(c: Client, a: argparse.Namespace) -> None:
        request_type = getattr(service_account_pb2, f"{method}Request")
        response = getattr(c.accounts, method)(request_type(name=f"serviceAccounts/{a.id}"))
        _print(a, response.service_account, columns=ACCOUNT_COLUMNS)

    return run


_ACCESS = {
    "read": permission_pb2.ACCESS_READ,
    "write": permission_pb2.ACCESS_WRITE,
    "read-write": permission_pb2.ACCESS_READ_WRITE,
}


def permission_create(c: Client, a: argparse.Namespace) -> None:
    permission = permission_pb2.Permission(display_name=a.name, access=_ACCESS[a.access])
    if a.all_buckets:
        permission.bucket_scope = permission_pb2.BUCKET_SCOPE_ALL
    elif a.prefix:
        permission.bucket_scope = permission_pb2.BUCKET_SCOPE_PREFIX
        permission.bucket_prefix = a.prefix
    else:
        permission.bucket_scope = permission_pb2.BUCKET_SCOPE_NAMES
        permission.bucket_names.extend(a.bucket)
    response = c.permissions.CreatePermission(
        permission_pb2.CreatePermissionRequest(permission=permission, permission_id=a.id or "")
    )
    _print(a, response.permission, columns=PERMISSION_COLUMNS)


def permission_list(c: Client, a: argparse.Namespace) -> None:
    response = c.permissions.ListPermissions(permission_pb2.ListPermissionsRequest(page_size=1000))
    _print(a, response, response.permissions, PERMISSION_COLUMNS)


def permission_get(c: Client, a: argparse.Namespace) -> None:
    _print(
        a,
        c.permissions.GetPermission(
            permission_pb2.GetPermissionRequest(name=f"permissions/{a.id}")
        ).permission,
        columns=PERMISSION_COLUMNS,
    )


def permission_delete(c: Client, a: argparse.Namespace) -> None:
    c.permissions.DeletePermission(
        permission_pb2.DeletePermissionRequest(name=f"permissions/{a.id}", force=a.force)
    )
    print(f"deleted permissions/{a.id}")


def usage(c: Client, a: argparse.Namespace) -> None:
    if a.history:
        history = c.usage.GetHistoricalUsage(usage_pb2.GetHistoricalUsageRequest())
        _print(
            a,
            history,
            history.months,
            ("year", "month", "average_bytes", "peak_bytes", "object_count"),
        )
    else:
        current = c.usage.GetCurrentUsage(usage_pb2.GetCurrentUsageRequest())
        _print(a, current, current.buckets, ("bucket", "bytes", "object_count"))
        if not a.json:
            print(f"total: {current.total_bytes} bytes in {current.total_object_count} objects")


SETTINGS_COLUMNS = ("account_audit_logs_enabled", "target_bucket", "audited_buckets", "updated_by")


def audit_settings(c: Client, a: argparse.Namespace) -> None:
    _print(
        a,
        c.settings.GetAuditSettings(settings_pb2.GetAuditSettingsRequest()).settings,
        columns=SETTINGS_COLUMNS,
    )


def audit_enable(c: Client, a: argparse.Namespace) -> None:
    _print(
        a,
        c.settings.EnableAccountAuditLogs(
            settings_pb2.EnableAccountAuditLogsRequest(target_bucket=a.bucket or "")
        ).settings,
        columns=SETTINGS_COLUMNS,
    )


def audit_disable(c: Client, a: argparse.Namespace) -> None:
    _print(
        a,
        c.settings.DisableAccountAuditLogs(settings_pb2.DisableAccountAuditLogsRequest()).settings,
        columns=SETTINGS_COLUMNS,
    )


def audit_target(c: Client, a: argparse.Namespace) -> None:
    _print(
        a,
        c.settings.SetAuditTargetBucket(
            settings_pb2.SetAuditTargetBucketRequest(target_bucket=a.bucket)
        ).settings,
        columns=SETTINGS_COLUMNS,
    )


# By name, as the CLI takes them.
_FORMATS = {name: number for number, name in EXPORT_FORMATS.items()}
_COMPRESSIONS = {name: number for number, name in EXPORT_COMPRESSIONS.items()}


def exporter_create(c: Client, a: argparse.Namespace) -> None:
    response = c.exporters.CreateExporter(
        exporter_pb2.CreateExporterRequest(
            exporter_id=a.id or "",
            exporter=exporter_pb2.Exporter(
                display_name=a.name,
                bucket=a.bucket,
                prefix=a.prefix,
                format=_FORMATS[a.format],
                compression=_COMPRESSIONS[a.compression],
                flush_interval=duration_pb2.Duration(seconds=a.interval),
            ),
        )
    )
    _print(a, response.exporter, columns=EXPORTER_COLUMNS)


def exporter_list(c: Client, a: argparse.Namespace) -> None:
    response = c.exporters.ListExporters(exporter_pb2.ListExportersRequest(page_size=1000))
    _print(a, response, response.exporters, EXPORTER_COLUMNS)


def exporter_get(c: Client, a: argparse.Namespace) -> None:
    _print(
        a,
        c.exporters.GetExporter(exporter_pb2.GetExporterRequest(name=f"exporters/{a.id}")).exporter,
        columns=EXPORTER_COLUMNS,
    )


def exporter_delete(c: Client, a: argparse.Namespace) -> None:
    c.exporters.DeleteExporter(exporter_pb2.DeleteExporterRequest(name=f"exporters/{a.id}"))
    print(f"deleted exporters/{a.id}")


def _event_filter(a: argparse.Namespace) -> audit_log_pb2.EventFilter:
    return audit_log_pb2.EventFilter(
        event_names=a.event, account_name=a.account or "", response_codes=a.code
    )


def events_list(c: Client, a: argparse.Namespace) -> None:
    response = c.events.ListEvents(
        audit_log_pb2.ListEventsRequest(
            filter=_event_filter(a), page_size=a.limit, since_event_id=a.since_event_id or ""
        )
    )
    _print(a, response, response.events, EVENT_COLUMNS)


def events_tail(c: Client, a: argparse.Namespace) -> None:
    stream = c.events.TailEvents(audit_log_pb2.TailEventsRequest(filter=_event_filter(a)))
    try:
        for item in stream:
            if a.json:
                print(json_format.MessageToJson(item.event, indent=None), flush=True)
            else:
                e = item.event
                print(
                    f"{e.sequence}  {e.event_name}  {e.request.account_name}  "
                    f"{e.response.response_status}",
                    flush=True,
                )
    except KeyboardInterrupt:
        stream.cancel()


def login(a: argparse.Namespace) -> int:
    secret = os.environ.get("AUDITLINE_SECRET_KEY")
    if not secret:
        secret = (
            getpass.getpass("secret key: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
        )
    with Client(a.target, access_key=a.access_key, secret_key=secret) as client:
        response = client.auth.Authenticate(
            auth_pb2.AuthenticateRequest(access_key=a.access_key, secret_key=secret)
        )
    path = _save_session(a.target, response.token, response.expire_time.ToSeconds())
    print(
        f"logged in to {a.target} as {response.service_account} until "
        f"{response.expire_time.ToJsonString()}; session saved in {path}"
    )
    return 0


# --- the parser --------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        default=os.environ.get("AUDITLINE_TARGET", DEFAULT_TARGET),
        help="HOST:PORT of the server (env AUDITLINE_TARGET)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        with _client(args) as client:
            try:
                command(client, args)
            except AuditlineError as error:
                print(f"error: {error.code().name}: {error.message}", file=sys.stderr)
                for field, problem in error.field_violations:
                    print(f"  {field}: {problem}", file=sys.stderr)
                return 1
        return 0

    return handler


def _group(subparsers: Any, name: str, help_text: str) -> Any:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(title="commands", metavar="COMMAND", required=True)


def _leaf(group: Any, name: str, command: Command, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(name, help=help_text, description=help_text)
    _common(parser)
    parser.set_defaults(handler=_run(command))
    return parser


def _retention_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retention-mode", choices=("governance", "compliance"), default="compliance"
    )
    parser.add_argument("--retention-days", type=int, default=0)


def add_commands(subparsers: Any) -> None:
    """Add every client command to the `auditline` parser."""
    parser = subparsers.add_parser(
        "login",
        help="authenticate and save the session",
        description="Authenticate with a service account's keys "
        "and save the session token (owner-only file). The secret "
        "key comes from AUDITLINE_SECRET_KEY or standard input.",
    )
    _common(parser)
    parser.add_argument("--access-key", required=True)
    parser.set_defaults(handler=login)

    bucket = _group(subparsers, "bucket", "buckets of the object store")
    p = _leaf(bucket, "create", bucket_create, "create a bucket")
    p.add_argument("name")
    p.add_argument("--immutable", action="store_true", help="with object lock")
    _retention_args(p)
    _leaf(bucket, "list", bucket_list, "list buckets")
    _leaf(bucket, "get", bucket_get, "show a bucket").add_argument("name")
    _leaf(bucket, "delete", bucket_delete, "delete an empty bucket").add_argument("name")
    p = _leaf(bucket, "lock", bucket_lock, "turn object lock on (for good)")
    p.add_argument("name")
    _retention_args(p)

    account = _group(subparsers, "account", "service accounts")
    p = _leaf(account, "create", account_create, "create a service account")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.add_argument("--role", choices=sorted(_ROLES), default="standard")
    p.add_argument("--permission", action="append", default=[], help="permission id")
    _leaf(account, "list", account_list, "list service accounts")
    for verb, method in (
        ("get", "GetServiceAccount"),
        ("enable", "EnableServiceAccount"),
        ("disable", "DisableServiceAccount"),
    ):
        _leaf(account, verb, _account_call(method), f"{verb} a service account").add_argument("id")
    _leaf(account, "delete", account_delete, "delete a service account").add_argument("id")

    permission = _group(subparsers, "permission", "bucket permissions")
    p = _leaf(permission, "create", permission_create, "create a permission")
    p.add_argument("name")
    p.add_argument("--id")
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--all-buckets", action="store_true")
    scope.add_argument("--prefix")
    scope.add_argument("--bucket", action="append")
    p.add_argument("--access", choices=sorted(_ACCESS), required=True)
    _leaf(permission, "list", permission_list, "list permissions")
    _leaf(permission, "get", permission_get, "show a permission").add_argument("id")
    p = _leaf(permission, "delete", permission_delete, "delete a permission")
    p.add_argument("id")
    p.add_argument("--force", action="store_true", help="even when accounts are bound to it")

    p = subparsers.add_parser("usage", help="storage used", description="storage used")
    _common(p)
    p.add_argument("--history", action="store_true", help="by month")
    p.set_defaults(handler=_run(usage))

    audit = _group(subparsers, "audit", "audit settings")
    _leaf(audit, "settings", audit_settings, "show the audit settings")
    _leaf(audit, "enable", audit_enable, "turn account audit logs on").add_argument(
        "bucket", nargs="?"
    )
    _leaf(audit, "disable", audit_disable, "turn account audit logs off")
    _leaf(audit, "target", audit_target, "change the (immutable) target bucket").add_argument(
        "bucket"
    )

    exporter = _group(subparsers, "exporter", "audit log exporters")
    p = _leaf(exporter, "create", exporter_create, "create an exporter")
    p.add_argument("name")
    p.add_argument("--id")
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", default="")
    p.add_argument("--format", choices=sorted(_FORMATS), default="apievent-json")
    p.add_argument("--compression", choices=sorted(_COMPRESSIONS), default="gzip")
    p.add_argument("--interval", type=int, default=300, help="seconds between files")
    _leaf(exporter, "list", exporter_list, "list exporters with their status")
    _leaf(exporter, "get", exporter_get, "show an exporter").add_argument("id")
    _leaf(exporter, "delete", exporter_delete, "delete an exporter").add_argument("id")

    events = _group(subparsers, "events", "audit events kept on the node")
    for verb, command, text in (
        ("list", events_list, "list events"),
        ("tail", events_tail, "stream new events"),
    ):
        p = _leaf(events, verb, command, text)
        p.add_argument("--event", action="append", default=[], help="event name")
        p.add_argument("--account")
        p.add_argument("--code", action="append", type=int, default=[], help="status code")
        if verb == "list":
            p.add_argument("--limit", type=int, default=50)
            p.add_argument("--since-event-id")
