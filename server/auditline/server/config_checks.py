"""The checks `auditline serve`'s settings must pass before it starts: what each
flag accepts, and which combinations cannot work. Apart from `config`, where the
settings are declared, so that each stays one thing to read."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from typing import TYPE_CHECKING

from auditline.contract import EXPORT_COMPRESSIONS, EXPORT_FORMATS
from auditline.interceptor import OCSF_VERSIONS, PARTITIONINGS, AuditPolicy
from auditline.server.bucket_reconciliation import BUCKET_MISMATCH_POLICIES

if TYPE_CHECKING:
    from auditline.server.config import Settings

__all__ = ["ConfigError", "check_settings", "split_list"]


class ConfigError(ValueError):
    """A setting has a value the server cannot run with."""


def split_list(value: str) -> list[str]:
    """A comma-separated setting as a list, blanks dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def check_settings(settings: Settings) -> None:
    """Raise `ConfigError` for a value or combination that cannot work."""
    for setting in dataclasses.fields(settings):
        value = getattr(settings, setting.name)
        # Every number here is a count, size or time: negative or NaN ones were
        # taken (negative retention days left the audit files unlocked at once;
        # a negative detection interval turned detection off without a word).
        if isinstance(value, int | float) and not (math.isfinite(value) and value >= 0):
            flag = "--" + setting.name.replace("_", "-")
            raise ConfigError(f"{flag} must be a number of at least 0, not {value}")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    if settings.tls_client_ca is not None and settings.tls_cert is None:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
    host, sep, port = settings.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen wants HOST:PORT, got {settings.listen!r}")
    if settings.max_workers < 1:
        raise ConfigError("--max-workers must be at least 1")
    if settings.token_ttl <= 0:
        raise ConfigError("--token-ttl must be positive")
    if min(settings.query_timeout, settings.query_max_bytes, settings.query_memory_bytes) <= 0:
        raise ConfigError(
            "--query-timeout, --query-max-bytes and --query-memory-bytes must be positive"
        )
    if settings.object_store and not settings.object_store.startswith(("file://", "s3://")):
        raise ConfigError("--object-store must start with file:// or s3://")
    if settings.bucket_mismatch not in BUCKET_MISMATCH_POLICIES:
        raise ConfigError(f"--bucket-mismatch must be one of {list(BUCKET_MISMATCH_POLICIES)}")
    if settings.export_target and not settings.export_target.startswith("s3://"):
        raise ConfigError("--export-target must be empty or s3://BUCKET?endpoint=...")
    if settings.audit_durability not in ("async", "sync"):
        raise ConfigError("--audit-durability must be async or sync")
    if settings.audit_process not in ("serving", "worker"):
        raise ConfigError("--audit-process must be serving or worker")
    if settings.backpressure not in ("block", "reject", "drop"):
        raise ConfigError("--backpressure must be block, reject or drop")
    if settings.export_format not in EXPORT_FORMATS.values():
        raise ConfigError(f"--export-format must be one of {sorted(EXPORT_FORMATS.values())}")
    if settings.export_partitioning not in PARTITIONINGS:
        raise ConfigError(f"--export-partitioning must be one of {sorted(PARTITIONINGS)}")
    if settings.export_ocsf_version not in OCSF_VERSIONS:
        raise ConfigError(f"--export-ocsf-version must be one of {list(OCSF_VERSIONS)}")
    if settings.export_format == "ocsf-parquet" and not (
        settings.export_lake_region and settings.export_lake_account_id
    ):
        raise ConfigError(
            "--export-format ocsf-parquet needs --export-lake-region and "
            "--export-lake-account-id (the keys' region= and accountId= partitions)"
        )
    if settings.export_compression not in EXPORT_COMPRESSIONS.values():
        raise ConfigError(
            f"--export-compression must be one of {sorted(EXPORT_COMPRESSIONS.values())}"
        )
    if settings.spool_max_bytes < 1 << 16 or settings.export_interval <= 0:
        raise ConfigError("--spool-max-bytes must be at least 65536 and --export-interval positive")
    if settings.audit_max_body_bytes < 1 or settings.audit_unauthenticated_body_bytes < 1:
        raise ConfigError("audited bodies must be allowed at least 1 byte")
    if settings.audit_durability == "sync" and settings.backpressure == "drop":
        raise ConfigError(
            "--backpressure drop loses events, which --audit-durability sync never "
            "does: use block or reject"
        )
    if (
        not settings.deployment
        or "+" in settings.deployment
        or any(c.isspace() for c in settings.deployment)
    ):
        raise ConfigError("--deployment must be a name without spaces or '+'")
    if settings.export_retention_mode not in ("governance", "compliance"):
        raise ConfigError("--export-retention-mode must be governance or compliance")
    if (
        settings.audit_unauthenticated_rate <= 0
        or settings.audit_unauthenticated_burst < 1
        or settings.audit_summary_interval <= 0
    ):
        raise ConfigError("the unauthenticated rate, burst and summary interval must be positive")
    try:
        AuditPolicy.parse(split_list(settings.audit_policy))
    except ValueError as exc:
        raise ConfigError(f"--audit-policy: {exc}") from None
    if settings.max_message_bytes < 1024 or settings.max_metadata_bytes < 1024:
        raise ConfigError("--max-message-bytes and --max-metadata-bytes must be at least 1024")
    if settings.spool_memory_bytes < 1 << 16:
        raise ConfigError("--spool-memory-bytes must be at least 65536")
    for network in split_list(settings.trusted_proxies):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"--trusted-proxies: {network!r} is not a CIDR") from None
    if settings.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(
            f"--log-level must be DEBUG, INFO, WARNING or ERROR, not {settings.log_level!r}"
        )
