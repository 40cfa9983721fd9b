"""`auditline usage`: the storage the account uses, now or by month."""

from __future__ import annotations

import argparse

from auditline.account.v1 import usage_pb2
from auditline.client._client import Client
from auditline.client._command_parsers import SubParsers, add_command
from auditline.client._output import print_message

__all__ = ["add_usage_command"]

_CURRENT_COLUMNS = ("bucket", "bytes", "object_count")
_HISTORY_COLUMNS = ("year", "month", "average_bytes", "peak_bytes", "object_count")


def _usage(client: Client, args: argparse.Namespace) -> None:
    if args.history:
        history = client.usage.GetHistoricalUsage(usage_pb2.GetHistoricalUsageRequest())
        print_message(history, as_json=args.json, rows=history.months, columns=_HISTORY_COLUMNS)
        return
    current = client.usage.GetCurrentUsage(usage_pb2.GetCurrentUsageRequest())
    print_message(current, as_json=args.json, rows=current.buckets, columns=_CURRENT_COLUMNS)
    if not args.json:
        # The JSON has the totals already; the table has a row per bucket only.
        print(f"total: {current.total_bytes} bytes in {current.total_object_count} objects")


def add_usage_command(subparsers: SubParsers) -> None:
    """`auditline usage [--history]` (a command without subcommands)."""
    parser = add_command(subparsers, "usage", _usage, "storage used")
    parser.add_argument("--history", action="store_true", help="by month")
