"""`auditline audit …`: the account's audit settings (logs on or off, target bucket)."""

from __future__ import annotations

import argparse
import json

from auditline.audit.v1 import settings_pb2
from auditline.client._client import Client
from auditline.client._command_parsers import SubParsers, add_command, add_group
from auditline.client._output import print_message

__all__ = ["add_audit_commands"]

_COLUMNS = ("account_audit_logs_enabled", "target_bucket", "audited_buckets", "updated_by")


def _show(client: Client, args: argparse.Namespace) -> None:
    response = client.settings.GetAuditSettings(settings_pb2.GetAuditSettingsRequest())
    print_message(response.settings, as_json=args.json, columns=_COLUMNS)


def _policy(client: Client, args: argparse.Namespace) -> None:
    settings = client.settings.GetAuditSettings(settings_pb2.GetAuditSettingsRequest()).settings
    if args.json:
        print(json.dumps({"audit_policy": list(settings.audit_policy)}, indent=2))
        return
    print("PATTERN  RECORD")
    for rule in settings.audit_policy:
        pattern, _, record = rule.rpartition("=")
        print(f"{pattern}  {record}")
    print("(no match)  all")


def _enable(client: Client, args: argparse.Namespace) -> None:
    response = client.settings.EnableAccountAuditLogs(
        settings_pb2.EnableAccountAuditLogsRequest(target_bucket=args.bucket or "")
    )
    print_message(response.settings, as_json=args.json, columns=_COLUMNS)


def _disable(client: Client, args: argparse.Namespace) -> None:
    response = client.settings.DisableAccountAuditLogs(
        settings_pb2.DisableAccountAuditLogsRequest()
    )
    print_message(response.settings, as_json=args.json, columns=_COLUMNS)


def _set_target(client: Client, args: argparse.Namespace) -> None:
    response = client.settings.SetAuditTargetBucket(
        settings_pb2.SetAuditTargetBucketRequest(target_bucket=args.bucket)
    )
    print_message(response.settings, as_json=args.json, columns=_COLUMNS)


def add_audit_commands(subparsers: SubParsers) -> None:
    """`auditline audit settings|enable|disable|target`."""
    audit = add_group(subparsers, "audit", "audit settings")
    add_command(audit, "settings", _show, "show the audit settings")
    add_command(audit, "policy", _policy, "show what this node records (its audit policy)")
    add_command(audit, "enable", _enable, "turn account audit logs on").add_argument(
        "bucket", nargs="?"
    )
    add_command(audit, "disable", _disable, "turn account audit logs off")
    add_command(audit, "target", _set_target, "change the (immutable) target bucket").add_argument(
        "bucket"
    )
