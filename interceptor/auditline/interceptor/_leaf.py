"""An event's leaf in its node's Merkle tree, recomputed the same from every format.

The leaf's data is the event (protobuf's JSON mapping of `ApiEvent`, as the spool
keeps it and the `apievent-json` format writes it) in canonical form: UTF-8 JSON,
no whitespace, object keys sorted by code point at every depth, strings with only
the escapes JSON requires, integers in decimal. (Numbers that are not whole, found
only in request and response bodies, are written in their shortest round-trip form.)
Its hash is RFC 6962's leaf hash, SHA-256(0x00 || data).

From an `apievent-json` line the event is the line's `ApiEvent` (or, in the IAM and
console structures, the event the record carries, which must make the record again:
`_log_shapes`). From an `ocsf-json` line (or an `ocsf-parquet` row) it is
`document_from_ocsf` of the record; the record is then made again from the event (in
the record's OCSF version) and must be the same, so that no field of the record can
change unseen.
"""

from __future__ import annotations

import calendar
import datetime
import functools
from typing import Any

import orjson
from google.protobuf import timestamp_pb2

from auditline.interceptor._log_shapes import document_from_console, document_from_iam
from auditline.interceptor._merkle import leaf_hash
from auditline.interceptor._ocsf import document_from_ocsf, ocsf_from_document

__all__ = [
    "LINE_FORMATS",
    "LineError",
    "canonical",
    "event_leaf",
    "read_line",
    "record_time",
    "timestamp_nanoseconds",
]


class LineError(ValueError):
    """A line that is not an event of its format (or not the event it claims to be)."""


def canonical(document: dict[str, Any]) -> bytes:
    """The event's canonical JSON: the data of its leaf."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def event_leaf(document: dict[str, Any]) -> bytes:
    """The event's leaf hash."""
    return leaf_hash(canonical(document))


_EPOCH = "1970-01-01T00:00:00Z"


@functools.lru_cache(maxsize=4096)
def _whole_seconds(text: str) -> int:
    when = datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC)
    return calendar.timegm(when.utctimetuple())


def timestamp_nanoseconds(text: str) -> int:
    """Protobuf's JSON `Timestamp` as nanoseconds since the epoch.

    The form every renderer writes (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`, 0/3/6/9 digits)
    is read here, the seconds cached (a file's events share them): protobuf's own
    parser took half the time of verifying an OCSF file. Anything else goes to it.
    """
    fraction = text[20:-1]
    if (
        len(text) in (20, 24, 27, 30)
        and text[-1] == "Z"
        and text[10] == "T"
        and (fraction.isdigit() if fraction else text[19] == "Z")
        and (not fraction or text[19] == ".")
        and fraction.isascii()
    ):
        nanos = int(fraction.ljust(9, "0")) if fraction else 0
        return _whole_seconds(text[:19]) * 1_000_000_000 + nanos
    stamp = timestamp_pb2.Timestamp()
    stamp.FromJsonString(text)
    return stamp.ToNanoseconds()


def record_time(document: dict[str, Any]) -> int:
    """The `time` of the event's OCSF record, epoch ms: when the call started, or for
    a detection finding, when it was made."""
    if document.get("LogType") == "LOG_TYPE_FINDINGS":
        return timestamp_nanoseconds(document["Response"].get("ResponseTime", _EPOCH)) // 10**6
    return timestamp_nanoseconds(document["Request"].get("RequestTime", _EPOCH)) // 10**6


def _from_apievent(record: Any) -> dict[str, Any]:
    """The event of a line in one of the document's shapes (`_log_shapes`). The files
    write `Sequence` as a number (`_formats`); the event, as protobuf's JSON mapping,
    has it as text (files written before hold text, and read the same)."""
    if "ApiEvent" in record:
        document = record["ApiEvent"]
        if not isinstance(document, dict):
            raise TypeError("ApiEvent is not an object")
        if len(record) != 1:
            # An IAM record with the event beside it read as that event, its own
            # fields unchecked (found by a review helper).
            raise LineError("a record with fields beside its ApiEvent")
    else:
        try:
            if record.get("created_by") == "IAM":
                document = document_from_iam(record)
            elif "ConsoleEvent" in record:
                document = document_from_console(record)
            else:
                raise KeyError("ApiEvent")
        except ValueError as error:
            raise LineError(str(error)) from None
    sequence = document.get("Sequence")
    if type(sequence) is int:
        document["Sequence"] = str(sequence)
    elif sequence is not None and not isinstance(sequence, str):
        raise TypeError("Sequence is not an integer")
    return dict(document)


def _from_ocsf(record: Any) -> dict[str, Any]:
    document = document_from_ocsf(record)
    again = ocsf_from_document(
        document,
        timestamp_nanoseconds(document["Request"].get("RequestTime", _EPOCH)),
        timestamp_nanoseconds(document["Response"].get("ResponseTime", _EPOCH)),
        record["metadata"]["version"],
    )
    if again != record:
        raise LineError("the OCSF record is not the one its event makes")
    return document


# An `ocsf-parquet` file's rows are read as the JSON lines of its records
# (`_compression.decompress`).
LINE_FORMATS = {
    "apievent-json": _from_apievent,
    "ocsf-json": _from_ocsf,
    "ocsf-parquet": _from_ocsf,
}


def read_line(format_name: str, line: bytes) -> dict[str, Any]:
    """The event of one exported line; `LineError` when the line is not one."""
    try:
        return LINE_FORMATS[format_name](orjson.loads(line))
    except LineError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        # AttributeError: a line of JSON that is not an object (a list, a string).
        raise LineError(f"not an {format_name} event ({type(exc).__name__})") from None
