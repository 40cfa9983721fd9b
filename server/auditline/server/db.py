"""State: one data-access layer over SQLAlchemy Core, migrated by Alembic.

SQLite in the data directory by default. Nothing outside this module writes SQL
by hand against a connection it opened itself; services call `Database.begin()`
and use the tables below, so another database URL (PostgreSQL) needs no change
in the services.
"""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Iterator
from importlib import resources
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from auditline.server.identity import MAX_ACCESS_KEY_CHARS

__all__ = ["Database", "insert_new", "metadata", "require_row", "tables", "upsert"]

metadata = sa.MetaData()
# The PostgreSQL advisory lock that serialises migrations (any constant of the service's).
_MIGRATION_LOCK = 0x6175646974  # "audit"


class tables:
    service_accounts = sa.Table(
        "service_accounts",
        metadata,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(128), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False, default=""),
        sa.Column("access_key", sa.String(MAX_ACCESS_KEY_CHARS), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    sessions = sa.Table(
        "sessions",
        metadata,
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(64),
            sa.ForeignKey("service_accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    permissions = sa.Table(
        "permissions",
        metadata,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(128), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False, default=""),
        sa.Column("bucket_scope", sa.Integer, nullable=False),
        sa.Column("bucket_prefix", sa.String(63), nullable=False, default=""),
        sa.Column("bucket_names", sa.JSON, nullable=False),
        sa.Column("access", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    account_permissions = sa.Table(
        "account_permissions",
        metadata,
        sa.Column(
            "account_id",
            sa.String(64),
            sa.ForeignKey("service_accounts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "permission_id",
            sa.String(64),
            sa.ForeignKey("permissions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    buckets = sa.Table(
        "buckets",
        metadata,
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("immutable", sa.Boolean, nullable=False),
        sa.Column("retention_mode", sa.Integer, nullable=False, default=0),
        sa.Column("retention_days", sa.Integer, nullable=False, default=0),
        sa.Column("audit_logging", sa.Boolean, nullable=False, default=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    usage_snapshots = sa.Table(
        "usage_snapshots",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("taken_at", sa.Float, nullable=False, index=True),
        sa.Column("total_bytes", sa.BigInteger, nullable=False),
        sa.Column("total_objects", sa.BigInteger, nullable=False),
    )
    login_failures = sa.Table(
        "login_failures",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ip", sa.String(64), nullable=False, index=True),
        sa.Column("access_key", sa.String(MAX_ACCESS_KEY_CHARS), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    ip_blocks = sa.Table(
        "ip_blocks",
        metadata,
        sa.Column("ip", sa.String(64), primary_key=True),
        # Empty: the address is blocked for every account.
        sa.Column("access_key", sa.String(MAX_ACCESS_KEY_CHARS), primary_key=True),
        sa.Column("until", sa.Float, nullable=False),
    )
    exporters = sa.Table(
        "exporters",
        metadata,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(128), nullable=False, unique=True),
        # A bucket of this service's store, or "" with `external` (JSON) set.
        sa.Column("bucket", sa.String(63), nullable=False),
        sa.Column("external", sa.JSON, nullable=True),
        sa.Column("prefix", sa.String(256), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("compression", sa.String(16), nullable=False),
        sa.Column("flush_interval", sa.Float, nullable=False),
        sa.Column("max_file_bytes", sa.Integer, nullable=False),
        sa.Column("retention_mode", sa.String(16), nullable=False),
        sa.Column("retention_days", sa.Integer, nullable=False),
        sa.Column("log_types", sa.JSON, nullable=False),
        sa.Column("partitioning", sa.String(16), nullable=False, server_default="date"),
        sa.Column("ocsf_version", sa.String(16), nullable=False, server_default="1.8.0"),
        sa.Column("lake_region", sa.String(64), nullable=False, server_default=""),
        sa.Column("lake_account_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    exporter_status = sa.Table(
        "exporter_status",
        metadata,
        # No foreign key: `default` (the flags' exporter of each node) has no row.
        sa.Column("exporter_id", sa.String(64), primary_key=True),
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("last_error_time", sa.Float, nullable=False),
        sa.Column("last_success_time", sa.Float, nullable=False),
        sa.Column("watermark", sa.BigInteger, nullable=False),
        sa.Column("backlog", sa.BigInteger, nullable=False),
        sa.Column("last_object_key", sa.Text, nullable=False),
        sa.Column("reported_at", sa.Float, nullable=False),
    )
    audit_settings = sa.Table(
        "audit_settings",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_logs_enabled", sa.Boolean, nullable=False, default=False),
        sa.Column("target_bucket", sa.String(63), nullable=False, default=""),
        sa.Column("updated_at", sa.Float, nullable=False, default=0.0),
        sa.Column("updated_by", sa.String(128), nullable=False, default=""),
    )


def require_row(
    connection: Connection, column: sa.Column[Any], value: str, resource: str
) -> dict[str, Any]:
    """The row whose `column` is `value`, or NotFoundError naming `resource`."""
    from auditline.errors import NotFoundError
    from auditline.server.echo import shown

    row = connection.execute(sa.select(column.table).where(column == value)).mappings().first()
    if row is None:
        raise NotFoundError(f"{shown(resource)} does not exist")
    return dict(row)


def _insert(connection: Connection, table: sa.Table, values: dict[str, Any]) -> Any:
    """An INSERT that can say what to do on a conflict (both dialects have one)."""
    insert: Any
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).values(**values)


def upsert(
    connection: Connection, table: sa.Table, values: dict[str, Any], keys: tuple[str, ...]
) -> None:
    """Insert the row, or update the one with the same `keys`: one statement, so that
    replicas writing the same row at once do not collide."""
    connection.execute(
        _insert(connection, table, values).on_conflict_do_update(
            index_elements=list(keys),
            set_={name: value for name, value in values.items() if name not in keys},
        )
    )


def insert_new(
    connection: Connection, table: sa.Table, values: dict[str, Any], keys: tuple[str, ...]
) -> bool:
    """Insert the row unless one with the same `keys` exists; whether it was inserted
    (of replicas doing the same at once, exactly one is told True)."""
    statement = _insert(connection, table, values).on_conflict_do_nothing(index_elements=list(keys))
    # RETURNING, not rowcount: on PostgreSQL (psycopg) a skipped row read as one.
    returned = connection.execute(statement.returning(*(table.c[key] for key in keys)))
    return returned.first() is not None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Database:
    """The engine, migrated to the newest schema when opened."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = sa.create_engine(url, future=True)
        self._sqlite = self.engine.dialect.name == "sqlite"
        if self._sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        # SQLite allows one writer; serialising writes here turns "database is
        # locked" retries into a short wait in this process.
        self._write_lock = threading.RLock() if self._sqlite else contextlib.nullcontext()
        self.migrate()

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option(
            "script_location", str(resources.files("auditline.server") / "migrations")
        )
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Replicas starting together: one migrates, the others wait for its
                # commit (the lock is the transaction's) and find the schema at head.
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                )
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction: committed when the block ends, rolled back on an exception."""
        with self._write_lock, self.engine.begin() as connection:
            yield connection

    @staticmethod
    def serialize(connection: Connection, what: str) -> None:
        """Hold `what` until the transaction ends: one check-then-write of its kind at
        a time across replicas (PostgreSQL's advisory lock; SQLite has one writer, and
        `begin` holds it in this process)."""
        if connection.dialect.name == "postgresql":
            key = zlib.crc32(what.encode())
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    def close(self) -> None:
        self.engine.dispose()
