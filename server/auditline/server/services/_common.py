"""Helpers the servicers share: resource names, paging, field masks, timestamps."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message
from sqlalchemy.engine import Connection

from auditline.errors import InvalidArgumentError
from auditline.server.echo import shown
from auditline.server.objectstore import bucket_name_problem

# What changes of the audit target and deletions of buckets hold while they check
# (`Database.serialize`): a bucket is never deleted as it becomes the target.
AUDIT_TARGET_LOCK = "audit-target"
# Held (`Database.serialize`) where exporters' destinations are checked and written:
# creating or updating an exporter, and moving the audit target (the default
# exporter's bucket). Taken after AUDIT_TARGET_LOCK where both are.
EXPORTERS_LOCK = "exporters"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


# What a Timestamp may hold (0001-01-01 to 9999-12-31, its own definition), and the
# nanoseconds SQLite's integers hold (to the year 2262).
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
_INT64 = 2**63


def checked_time(message: Message, field: str) -> timestamp_pb2.Timestamp | None:
    """The Timestamp `field` of `message` (None when unset), if it is a time a
    Timestamp may hold; INVALID_ARGUMENT if not."""
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    if not _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS or not 0 <= stamp.nanos < 10**9:
        raise InvalidArgumentError.field(field, "is not a time between the years 1 and 9999")
    return stamp


def time_ns(message: Message, field: str) -> int | None:
    """The Timestamp `field` of `message` in nanoseconds since the epoch, to compare
    with stored ones (None when unset): checked, and brought within the 64-bit
    integers (a bound past them is as good as their end)."""
    stamp = checked_time(message, field)
    if stamp is None:
        return None
    return max(-_INT64, min(stamp.ToNanoseconds(), _INT64 - 1))


def resource_id(name: str, collection: str, field: str = "name") -> str:
    """`{collection}/{id}` → id, or INVALID_ARGUMENT naming the field."""
    prefix = collection + "/"
    if not name.startswith(prefix) or not name[len(prefix) :]:
        raise InvalidArgumentError.field(
            field, f"must look like {collection}/{{id}}, not {shown(name)!r}"
        )
    return name[len(prefix) :]


def bucket_id(value: str, field: str) -> str:
    """A bucket named either way the API writes it (`x`, or its resource name
    `buckets/x`) → `x`; INVALID_ARGUMENT naming the field and both forms otherwise."""
    name = value.removeprefix("buckets/")
    problem = bucket_name_problem(name)
    if problem:
        raise InvalidArgumentError.field(
            field,
            f"takes a bucket name (my-bucket) or its resource name (buckets/my-bucket); "
            f"{shown(name)!r} {problem}",
        )
    return name


def check_new_id(value: str, field: str) -> None:
    if value and not _ID.match(value):
        raise InvalidArgumentError.field(
            field, "must be 1-63 lowercase letters, digits or '-', starting with a letter or digit"
        )


def check_display_name(value: str, field: str = "display_name") -> None:
    if not value.strip():
        raise InvalidArgumentError.field(field, "is required")
    if len(value) > 128:
        raise InvalidArgumentError.field(field, "must be at most 128 characters")


def page_limit(page_size: int, default: int = DEFAULT_PAGE_SIZE, field: str = "page_size") -> int:
    """A request's page size (the field `field`), validated and capped."""
    if page_size < 0:
        raise InvalidArgumentError.field(field, "must not be negative")
    return min(page_size or default, MAX_PAGE_SIZE)


def encode_page_token(key: str, position: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({key: position}).encode()).decode()


def decode_page_token(token: str, key: str) -> int:
    """The position `encode_page_token` put in a token; INVALID_ARGUMENT if it is not one."""
    try:
        position = int(json.loads(base64.urlsafe_b64decode(token.encode()))[key])
    except (ValueError, KeyError, TypeError, OverflowError):  # OverflowError: 1e999
        position = -1
    if not 0 <= position < _INT64:  # the positions this server hands out
        raise InvalidArgumentError.field("page_token", "is not a token this server returned")
    return position


def page(page_size: int, page_token: str) -> tuple[int, int]:
    """(offset, limit) from a request's paging fields, validated."""
    limit = page_limit(page_size)
    if not page_token:
        return 0, limit
    offset = decode_page_token(page_token, "o")
    if offset < 0:
        raise InvalidArgumentError.field("page_token", "is not a token this server returned")
    return offset, limit


def list_page(
    connection: Connection,
    table: sa.Table,
    offset: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    """One page of a table's rows in creation order, and the number of rows in all."""
    total = connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    rows = (
        connection.execute(
            sa.select(table).order_by(table.c.created_at, table.c.id).offset(offset).limit(limit)
        )
        .mappings()
        .all()
    )
    return [dict(row) for row in rows], int(total)


def next_page_token(offset: int, limit: int, returned: int, total: int) -> str:
    if offset + returned >= total or returned < limit:
        return ""
    return encode_page_token("o", offset + returned)


def mask_paths(
    mask: field_mask_pb2.FieldMask,
    resource: Message,
    allowed: Iterable[str],
) -> set[str]:
    """The fields an update changes: the mask's, or every populated updatable field."""
    allowed = set(allowed)
    if mask.paths:
        unknown = sorted(set(mask.paths) - allowed)
        if unknown:
            raise InvalidArgumentError.field(
                "update_mask",
                f"cannot update {', '.join(unknown)}; updatable fields: "
                f"{', '.join(sorted(allowed))}",
            )
        return set(mask.paths)
    # AIP-134: no mask means every field the request populated.
    return {field.name for field, _ in resource.ListFields() if field.name in allowed}
