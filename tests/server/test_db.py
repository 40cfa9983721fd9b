"""The schema the migrations build is the schema the code declares."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from auditline.server.db import Database, metadata


def test_migrations_build_the_declared_schema(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'state.db'}")
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


def test_opening_twice_migrates_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    Database(url).close()
    database = Database(url)
    with database.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == "0002"
