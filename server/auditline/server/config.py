"""The settings of `auditline serve`.

Every setting is a field of `Settings`; each one is a command-line flag
(`--data-dir`) and an environment variable (`AUDITLINE_DATA_DIR`), the flag
winning over the variable and the variable over the default. Fields are
declared once here and the flags are derived from them, so the three can never
disagree.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any

from auditline.server.config_checks import ConfigError, check_settings, split_list

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "Settings",
    "add_arguments",
    "settings_from_args",
    "split_list",
]

ENV_PREFIX = "AUDITLINE_"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything `auditline serve` can be told. Defaults need no other set-up."""

    listen: str = field(
        default="127.0.0.1:50051",
        metadata=_help("HOST:PORT to listen on; port 0 picks a free port"),
    )
    data_dir: Path = field(
        default=Path("data"), metadata=_help("directory for state and local objects")
    )
    tls_cert: Path | None = field(
        default=None, metadata=_help("PEM certificate chain; enables TLS with --tls-key")
    )
    tls_key: Path | None = field(default=None, metadata=_help("PEM private key of --tls-cert"))
    tls_client_ca: Path | None = field(
        default=None,
        metadata=_help("PEM CA bundle; clients must present a certificate it signed (mutual TLS)"),
    )
    shutdown_grace: float = field(
        default=10.0, metadata=_help("seconds in-flight calls get to finish after SIGTERM/SIGINT")
    )
    max_workers: int = field(default=16, metadata=_help("threads serving calls"))
    log_level: str = field(default="INFO", metadata=_help("DEBUG, INFO, WARNING or ERROR"))
    database_url: str = field(
        default="", metadata=_help("SQLAlchemy URL of the state; default sqlite in DATA_DIR")
    )
    object_store: str = field(
        default="",
        metadata=_help(
            "file:///path or s3://?endpoint=URL&region=R (AWS credentials from the "
            "standard variables); default file://DATA_DIR/objects"
        ),
    )
    bucket_mismatch: str = field(
        default="adopt",
        metadata=_help(
            "a bucket in the object store and not the catalogue, or the reverse, at start: "
            "adopt (catalogue the store's; the reverse stops the start), follow-store "
            "(also forget the catalogue's), leave (a shared store: leave the store's "
            "alone) or refuse"
        ),
    )
    token_ttl: float = field(default=3600.0, metadata=_help("session token lifetime, seconds"))
    login_block_seconds: float = field(
        default=900.0,
        metadata=_help("how long an address stays blocked after too many failed logins"),
    )
    usage_snapshot_interval: float = field(
        default=3600.0, metadata=_help("seconds between usage snapshots; 0 turns them off")
    )
    audit_durability: str = field(
        default="async",
        metadata=_help(
            "async (the call returns before its event is on disk) or sync (fail-closed: only after)"
        ),
    )
    backpressure: str = field(
        default="block", metadata=_help("when the spool is full: block, reject or drop")
    )
    audit_process: str = field(
        default="worker",
        metadata=_help(
            "where events are built, spooled and exported: worker (a process it starts "
            "and restarts, off the serving process's GIL) or serving (this process)"
        ),
    )
    spool_max_bytes: int = field(
        default=1 << 30,
        metadata=_help(
            "the audit spool's size cap, in bytes: events not yet exported and exported "
            "ones kept for queries (these give way first)"
        ),
    )
    spool_memory_bytes: int = field(
        default=64 << 20,
        metadata=_help(
            "events waiting in memory while the spool cannot write (a full disk); past "
            "it they are dropped and counted in an AuditEventsDropped marker"
        ),
    )
    spool_reserve_bytes: int = field(
        default=0,
        metadata=_help(
            "disk space the spool sets aside and releases when the disk fills, so the "
            "events of calls already running are still written; 0: 1/16 of "
            "--spool-max-bytes, 1 to 64 MiB"
        ),
    )
    events_retention_days: float = field(
        default=7.0,
        metadata=_help("days exported events stay queryable on the node (ListEvents, TailEvents)"),
    )
    state_poll_interval: float = field(
        default=2.0,
        metadata=_help(
            "seconds between reads of the state replicas share (the audit target, the "
            "exporters), so that a change made on another replica applies here; 0: never"
        ),
    )
    query_timeout: float = field(
        default=30.0,
        metadata=_help("seconds a QueryEvents call's SQL may run (and its call's deadline)"),
    )
    query_max_bytes: int = field(
        default=256 << 20,
        metadata=_help("bytes of exported files a QueryEvents call may read"),
    )
    query_memory_bytes: int = field(
        default=256 << 20,
        metadata=_help(
            "memory a QueryEvents call's SQL may use (on one thread), and as much again "
            "spilled to disk"
        ),
    )
    audit_bucket: str = field(
        default="auditline-audit-logs",
        metadata=_help("the object-locked bucket created for the audit logs on first start"),
    )
    export_target: str = field(
        default="",
        metadata=_help(
            "where the default exporter writes: empty for the audit bucket, or "
            "s3://BUCKET?endpoint=URL&region=R for a bucket elsewhere"
        ),
    )
    export_interval: float = field(
        default=300.0, metadata=_help("seconds between files of the default exporter")
    )
    export_format: str = field(
        default="apievent-json",
        metadata=_help(
            "apievent-json, ocsf-json or ocsf-parquet (Amazon Security Lake's custom "
            "source layout: needs --export-lake-region and --export-lake-account-id)"
        ),
    )
    export_ocsf_version: str = field(
        default="1.8.0",
        metadata=_help("the OCSF formats' version: 1.8.0, or 1.1.0 (what Security Lake takes)"),
    )
    export_lake_region: str = field(
        default="", metadata=_help("the ocsf-parquet format's region= partition, e.g. us-east-1")
    )
    export_lake_account_id: str = field(
        default="",
        metadata=_help("the ocsf-parquet format's accountId= partition, e.g. 123456789012"),
    )
    export_compression: str = field(default="gzip", metadata=_help("gzip, zstd or none"))
    export_partitioning: str = field(
        default="date",
        metadata=_help(
            "the day's folders in file keys: date (YYYY/MM/DD) or hive "
            "(year=YYYY/month=MM/day=DD, which DuckDB, Athena, Spark and Trino prune on)"
        ),
    )
    export_retention_days: int = field(
        default=30, metadata=_help("object-lock retention of exported files, days (0: none)")
    )
    export_retention_mode: str = field(
        default="governance",
        metadata=_help(
            "object-lock mode of exported files: governance (an identity with bypass rights "
            "may still delete them) or compliance (nobody can, until retention ends)"
        ),
    )
    audit_hmac_key_file: Path | None = field(
        default=None,
        metadata=_help(
            "file holding the key of HMAC-redacted audit fields; "
            "default DATA_DIR/audit-hmac.key, created on first start"
        ),
    )
    audit_signing_key_file: Path | None = field(
        default=None,
        metadata=_help(
            "file holding the Ed25519 key that signs the log's checkpoints (a "
            "PRIVATE+KEY+... signer key); default DATA_DIR/audit-signing.key, created on "
            "first start. A new file rotates the key; the old ones stay listed"
        ),
    )
    deployment: str = field(
        default="auditline",
        metadata=_help("the deployment's name: checkpoints' origin is <deployment>/<node id>"),
    )
    trusted_proxies: str = field(
        default="", metadata=_help("comma-separated CIDRs whose x-forwarded-for is believed")
    )
    audit_metadata: str = field(
        default="x-request-id", metadata=_help("comma-separated request metadata keys to audit")
    )
    audit_max_body_bytes: int = field(
        default=100_000, metadata=_help("audited request/response bodies are cut at this size")
    )
    audit_unauthenticated_body_bytes: int = field(
        default=4096,
        metadata=_help("the same cut for calls without an authenticated caller"),
    )
    audit_policy: str = field(
        default=(
            "grpc.health.v1.Health/*=summary,"
            "grpc.reflection.v1.ServerReflection/*=summary,"
            "grpc.reflection.v1alpha.ServerReflection/*=summary"
        ),
        metadata=_help(
            "what to record, comma-separated PATTERN=RECORD rules (PATTERN: pkg.Service/Method, "
            "pkg.Service/* or *; RECORD: all, denied, allowed or summary; the first match "
            "wins, no match: all). Calls left out are counted in CallsSummarized events"
        ),
    )
    detection_interval: float = field(
        default=5.0,
        metadata=_help(
            "seconds between runs of the detection rules over new events (findings go to "
            "the findings log); 0 turns detection off"
        ),
    )
    detection_rules: str = field(
        default="",
        metadata=_help("comma-separated directories of your own Sigma rules (.yml), run too"),
    )
    audit_unauthenticated_rate: float = field(
        default=10.0,
        metadata=_help(
            "unauthenticated calls per second and source address recorded one by one; "
            "past it (and a burst) they are counted in a CallsSummarized event"
        ),
    )
    audit_unauthenticated_burst: int = field(
        default=50, metadata=_help("unauthenticated calls a source may make at once")
    )
    audit_summary_interval: float = field(
        default=60.0, metadata=_help("seconds one CallsSummarized event covers at most")
    )
    max_message_bytes: int = field(
        default=4 << 20,
        metadata=_help(
            "largest request message; larger ones get RESOURCE_EXHAUSTED and are audited "
            "(messages over twice this are refused by gRPC itself, and recorded CANCELLED)"
        ),
    )
    max_metadata_bytes: int = field(
        default=8192,
        metadata=_help(
            "largest request metadata (as HTTP/2 counts it); the same rule, gRPC's own "
            "limit being eight times this"
        ),
    )

    def validate(self) -> None:
        """Raise `ConfigError` for combinations that cannot work (`config_checks`)."""
        check_settings(self)

    @property
    def long_call_slots(self) -> int:
        """How many calls of a kind that holds a server thread while it lasts (event
        tails, reflection streams) a node serves at once: a quarter of its threads."""
        return max(1, self.max_workers // 4)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def configure_logging(settings: Settings) -> None:
    """The log format and level of `auditline serve` (and of its audit worker)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic narrates every start at INFO; only its warnings matter here.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.root.level))


def _field_type(setting: dataclasses.Field[Any]) -> type:
    hint = typing.get_type_hints(Settings)[setting.name]
    if isinstance(hint, types.UnionType):  # `X | None`
        (hint,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
    return typing.cast(type, hint)


def _env_name(setting: dataclasses.Field[Any]) -> str:
    return ENV_PREFIX + setting.name.upper()


def add_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None) -> None:
    """Add one flag per setting, its default taken from the environment first."""
    env = os.environ if env is None else env
    for setting in dataclasses.fields(Settings):
        kind = _field_type(setting)
        env_name = _env_name(setting)
        default = setting.default
        if env.get(env_name):  # empty: unset, as compose files write it
            # As given: argparse converts it (`type`) only when `serve` is what runs, so
            # a bad value stops the server, not every other command (found by a helper).
            default = env[env_name]
        shown = "" if default is None else f" (default: {default})"
        parser.add_argument(
            "--" + setting.name.replace("_", "-"),
            dest=setting.name,
            type=kind,
            default=default,
            metavar=setting.name.upper(),
            help=f"{setting.metadata['help']}{shown}; env {env_name}",
        )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Build validated `Settings` from parsed flags."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)}
    settings = Settings(**values)
    settings.validate()
    return settings
