"""How the commands print a result: a table by default, JSON with `--json`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

__all__ = ["print_message"]


def print_message(
    message: Message,
    *,
    as_json: bool,
    rows: Iterable[Message] | None = None,
    columns: tuple[str, ...] = (),
) -> None:
    """Print `rows` (else the message itself) as a table of `columns`.

    A column is a field path (`status.state`). Without columns, or with `as_json`,
    the whole message is printed as JSON, so scripts see every field.
    """
    if as_json or not columns:
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
            # ROLE_ADMIN -> ADMIN, BUCKET_SCOPE_ALL -> ALL: up to two leading words are
            # taken as the enum's prefix (so ACCESS_READ_WRITE shows as WRITE).
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
