"""The names events and files use for activities and logs: the enums' names as
protobuf's JSON writes them, and each log's folder in the exported files' keys."""

from __future__ import annotations

from auditline.audit.v1 import event_pb2, options_pb2

__all__ = ["ACTIVITY_ENUM_NAMES", "LOG_DIRS", "LOG_DIR_NAMES", "LOG_TYPE_ENUM_NAMES"]

ACTIVITY_ENUM_NAMES = {v.number: v.name for v in options_pb2.Activity.DESCRIPTOR.values}
LOG_TYPE_ENUM_NAMES = {v.number: v.name for v in event_pb2.LogType.DESCRIPTOR.values}
# Each log's folder (and, in OCSF records, `metadata.log_name`), by the enum's name.
LOG_DIR_NAMES = {
    "LOG_TYPE_UNSPECIFIED": "account_api",
    "LOG_TYPE_ACCOUNT_API": "account_api",
    "LOG_TYPE_IAM": "iam",
    "LOG_TYPE_SETTINGS": "settings",
    "LOG_TYPE_SUMMARIES": "summaries",
    "LOG_TYPE_FINDINGS": "findings",
}
# The same by the `LogType` number.
LOG_DIRS = {number: LOG_DIR_NAMES[name] for number, name in LOG_TYPE_ENUM_NAMES.items()}
