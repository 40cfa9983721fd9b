"""The schema the migrations build is the schema the code declares."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from auditline.server.db import Database, metadata
from tests.support.postgres import PostgreSQL


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migrations_build_the_declared_schema(
    tmp_path: Path, dialect: str, request: pytest.FixtureRequest
) -> None:
    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        postgres: PostgreSQL = request.getfixturevalue("postgres")
        url = postgres.new_database()
    database = Database(url)
    with database.engine.connect() as connection:
        assert connection.dialect.name == dialect
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    database.close()
    assert differences == []


def test_opening_twice_migrates_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    Database(url).close()
    database = Database(url)
    with database.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == "0004"


def test_exporters_saved_before_the_data_lake_keep_what_they_wrote(tmp_path: Path) -> None:
    """Migration 0003 gives existing exporters the settings they had: date keys, OCSF
    1.8.0, no lake partitions."""
    from importlib import resources

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("auditline.server") / "migrations")
    )
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        connection.execute(
            sa.text(
                "INSERT INTO exporters VALUES ('siem', 'SIEM', 'logs', NULL, '', "
                "'ocsf-json', 'zstd', 300.0, 2500000, '', 0, '[]', 1.0, 1.0)"
            )
        )
    engine.dispose()
    database = Database(f"sqlite:///{tmp_path / 'state.db'}")
    with database.begin() as connection:
        row = connection.execute(sa.text("SELECT * FROM exporters")).mappings().one()
    assert (row["partitioning"], row["ocsf_version"]) == ("date", "1.8.0")
    assert (row["lake_region"], row["lake_account_id"]) == ("", "")
    database.close()
