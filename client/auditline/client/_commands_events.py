"""`auditline events …`: the audit events the node still keeps, listed or followed.

`events query` (SQL over the exported log files) is auditline-interceptor's: it adds
itself to this group through the `events.query` entry point (see `cli`)."""

from __future__ import annotations

import argparse

from google.protobuf import json_format

from auditline.audit.v1 import audit_log_pb2
from auditline.client._client import Client
from auditline.client._command_parsers import SubParsers, add_command, add_group
from auditline.client._output import print_message

__all__ = ["add_event_commands"]

_COLUMNS = (
    "sequence",
    "request.request_time",
    "event_name",
    "request.account_name",
    "response.response_status",
    "request.source_ip",
)


def _event_filter(args: argparse.Namespace) -> audit_log_pb2.EventFilter:
    return audit_log_pb2.EventFilter(
        event_names=args.event, account_name=args.account or "", response_codes=args.code
    )


def _list(client: Client, args: argparse.Namespace) -> None:
    response = client.events.ListEvents(
        audit_log_pb2.ListEventsRequest(
            filter=_event_filter(args),
            page_size=args.limit,
            since_event_id=args.since_event_id or "",
        )
    )
    print_message(response, as_json=args.json, rows=response.events, columns=_COLUMNS)


def _tail(client: Client, args: argparse.Namespace) -> None:
    stream = client.events.TailEvents(audit_log_pb2.TailEventsRequest(filter=_event_filter(args)))
    # One line per event, flushed, so a pipe (`| jq`) sees each event as it comes;
    # Ctrl-C ends the stream rather than the program with a traceback.
    if not args.json:
        print("SEQUENCE  EVENT_NAME  ACCOUNT_NAME  RESPONSE_STATUS", flush=True)
    try:
        for item in stream:
            if args.json:
                print(json_format.MessageToJson(item.event, indent=None), flush=True)
            else:
                event = item.event
                print(
                    f"{event.sequence}  {event.event_name}  {event.request.account_name}  "
                    f"{event.response.response_status}",
                    flush=True,
                )
    except KeyboardInterrupt:
        stream.cancel()


def add_event_commands(subparsers: SubParsers) -> None:
    """`auditline events list|tail`, filtered by event name, account and status code."""
    events = add_group(
        subparsers, "events", "audit events: kept on the node (list, tail), exported (query)"
    )
    for verb, command, text in (
        ("list", _list, "list events"),
        ("tail", _tail, "stream new events"),
    ):
        parser = add_command(events, verb, command, text)
        parser.add_argument("--event", action="append", default=[], help="event name")
        parser.add_argument("--account")
        parser.add_argument("--code", action="append", type=int, default=[], help="status code")
        if verb == "list":
            parser.add_argument("--limit", type=int, default=50)
            parser.add_argument("--since-event-id")
