"""The `auditline` commands that drive the service through the Python client.

Tables by default, `--json` for scripts. Exit codes: 0 success, 1 the server
refused (the message says why), 2 a usage error.
"""

from __future__ import annotations

from auditline.client._command_parsers import SubParsers
from auditline.client._commands_accounts import add_account_commands
from auditline.client._commands_audit import add_audit_commands
from auditline.client._commands_buckets import add_bucket_commands
from auditline.client._commands_events import add_event_commands
from auditline.client._commands_exporters import add_exporter_commands
from auditline.client._commands_login import add_login_command, add_logout_command
from auditline.client._commands_permissions import add_permission_commands
from auditline.client._commands_usage import add_usage_command

__all__ = ["add_commands"]


def add_commands(subparsers: SubParsers) -> None:
    """Add every client command to the `auditline` parser."""
    # In this order in `auditline --help`.
    add_login_command(subparsers)
    add_logout_command(subparsers)
    add_bucket_commands(subparsers)
    add_account_commands(subparsers)
    add_permission_commands(subparsers)
    add_usage_command(subparsers)
    add_audit_commands(subparsers)
    add_exporter_commands(subparsers)
    add_event_commands(subparsers)
