"""How the commands print a result: a table by default, JSON with `--json`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message

__all__ = ["print_deleted", "print_message"]


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


@cache
def print_deleted(name: str, *, as_json: bool) -> None:
    """What a delete says: the resource's name, as a sentence or as JSON."""
    print(json.dumps({"deleted": name}) if as_json else f"deleted {name}")


def _enum_prefix(enum: EnumDescriptor) -> str:
    """The prefix every value of the enum shares, protobuf's style (`ROLE_ADMIN` ->
    `ROLE_`, `BUCKET_SCOPE_ALL` -> `BUCKET_SCOPE_`), so a table shows `READ_WRITE`."""
    names = [value.name.split("_") for value in enum.values]
    shared: list[str] = []
    # Whole words only, and never a whole name.
    for words in zip(*(name[:-1] for name in names), strict=False):
        if len(set(words)) != 1:
            break
        shared.append(words[0])
    return "".join(word + "_" for word in shared)


def _cell(item: Message, path: str) -> str:
    value: Any = item
    repeated = False
    for part in path.split("."):
        field = value.DESCRIPTOR.fields_by_name[part]
        value = getattr(value, part)
        repeated = field.is_repeated
        if field.enum_type is not None and not repeated:
            name = field.enum_type.values_by_number[value].name
            value = name.removeprefix(_enum_prefix(field.enum_type))
    if repeated:
        return ",".join(str(v) for v in value)
    if isinstance(value, Message):
        if value.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
            return str(value.ToJsonString())  # type: ignore[attr-defined]
        return json_format.MessageToJson(value, indent=None)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
