"""The schema is made only by Alembic, and `upgrade head` gives exactly the models' schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from modelyard.registry.db import make_engine, upgrade_to_head
from modelyard.registry.models import Base


def _diff(engine: Engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def _check(engine: Engine) -> None:
    upgrade_to_head(engine)
    assert set(inspect(engine).get_table_names()) == {"alembic_version", "models", "model_versions",
                                                       "aliases", "events", "tokens", "registry_state",
                                                       "artifact_blobs", "artifact_chunks", "model_tags", "shadows",
                                                       "shadow_counts", "guards", "guard_counts", "approvals",
                                                       "webhooks", "webhook_deliveries", "prediction_log",
                                                       "drift_counts", "drift_verdicts"}
    assert _diff(engine) == []
    upgrade_to_head(engine)  # a second run is a no-op
    assert _diff(engine) == []


def test_upgrade_head_on_empty_sqlite_matches_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        _check(engine)
    finally:
        engine.dispose()


def test_upgrade_head_on_empty_postgresql_matches_models(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        _check(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else f"sqlite:///{tmp_path / 'm.db'}"
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _alembic(engine: Engine, action: str, target: str) -> None:
    from modelyard.registry.db import run_migrations

    run_migrations(engine, action, target)


def test_one_step_down_and_up_again_gives_the_models_schema(empty_engine: Engine) -> None:
    upgrade_to_head(empty_engine)
    _alembic(empty_engine, "downgrade", "-1")
    assert _diff(empty_engine) != []  # the last migration's change is gone
    _alembic(empty_engine, "upgrade", "head")
    assert _diff(empty_engine) == []


def test_downgrade_removes_everything(empty_engine: Engine) -> None:
    upgrade_to_head(empty_engine)
    _alembic(empty_engine, "downgrade", "base")
    assert set(inspect(empty_engine).get_table_names()) == {"alembic_version"}


@pytest.mark.parametrize("pragma, expected", [("journal_mode", "wal"), ("foreign_keys", 1)])
def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path: Path, pragma: str, expected: object) -> None:
    from sqlalchemy import text

    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with engine.connect() as conn:
        assert conn.execute(text(f"PRAGMA {pragma}")).scalar() == expected
    engine.dispose()


def test_the_tag_rows_are_filled_from_the_models_tags_on_upgrade(empty_engine: Engine) -> None:
    from sqlalchemy import text

    _alembic(empty_engine, "upgrade", "0007")
    with empty_engine.begin() as conn:
        for name, tags in (("a", '{"team": "risk", "tier": "gold"}'), ("b", "{}"), ("c", '{"team": "growth"}')):
            conn.execute(text("INSERT INTO models (name, description, tags, last_version, created_at, updated_at) "
                              "VALUES (:name, '', :tags, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                         {"name": name, "tags": tags})
    _alembic(empty_engine, "upgrade", "head")
    with empty_engine.connect() as conn:
        rows = conn.execute(text("SELECT m.name, t.key, t.value FROM model_tags t JOIN models m ON m.id = t.model_id "
                                 "ORDER BY m.name, t.key")).all()
    assert [tuple(row) for row in rows] == [("a", "team", "risk"), ("a", "tier", "gold"), ("c", "team", "growth")]


@pytest.mark.parametrize("target", ["0007", "0005", "0002"])
def test_down_and_up_again_keeps_every_row_and_counts_the_versions(tmp_path: Path, target: str) -> None:
    """A populated SQLite registry (foreign keys on, as modelyard runs it) down to an older
    revision and up again: no table copy may cascade away or refuse a model's versions, aliases
    or events (before run_migrations turned the keys off, 0006's copy of model_versions failed on
    the alias pointing at it)."""
    from sqlalchemy import text

    from modelyard.app import create_app
    from modelyard.web.context import EXTENSION
    from tests.conftest import config_in

    app = create_app(config_in(tmp_path))
    engine = app.extensions[EXTENSION].engine

    def counts() -> tuple[int, ...]:
        with engine.connect() as conn:
            return tuple(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                         for table in ("models", "model_versions", "aliases", "events"))

    before = counts()
    assert before[:3] == (1, 1, 1)
    _alembic(engine, "downgrade", target)
    assert counts() == before
    upgrade_to_head(engine)
    assert counts() == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_count FROM models WHERE name = 'iris'")).scalar_one() == 1
    engine.dispose()
