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
                                                       "artifact_blobs", "artifact_chunks"}
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
    from alembic import command
    from alembic.config import Config

    from modelyard.registry.db import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, target)


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
