"""Shared fixtures: an app on each backend, through one parametrized ``config``: a temp SQLite
file with a temp artifact directory, and a database of its own on the real PostgreSQL with the
artifacts in it (the configuration several servers share). Every test that takes ``config``
(or ``app``, ``client``, ``runtime``...) runs on both."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from modelyard.app import create_app
from modelyard.web.context import EXTENSION, Runtime

PG_ADMIN_URL = os.environ.get("MODELYARD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _no_modelyard_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's MODELYARD_* variables must not leak into the tests."""
    for name in list(os.environ):
        if name.startswith("MODELYARD_") and name != "MODELYARD_TEST_PG_URL":
            monkeypatch.delenv(name)


def config_in(directory: Path, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A test configuration keeping the registry, artifacts, mapped copies and admin token in
    ``directory``."""
    return {
        "database": {"url": f"sqlite:///{directory / 'registry.db'}"},
        "artifacts": {"root": str(directory / "artifacts")},
        "auth": {"admin_token_file": str(directory / "admin.token")},
        **sections,
        "cache": {"mapped_root": str(directory / "mapped"), **sections.get("cache", {})},
    }


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, dict[str, Any]]:
    if request.param == "sqlite":
        return config_in(tmp_path)
    return config_in(tmp_path, database={"url": request.getfixturevalue("pg_copy")},
                     artifacts={"store": "database", "root": str(tmp_path / "artifacts")})


@pytest.fixture
def app(config: dict[str, dict[str, Any]]) -> Iterator[Flask]:
    app = create_app(config)
    yield app
    app.extensions[EXTENSION].engine.dispose()


def admin_client(app: Flask) -> FlaskClient:
    """A test client that sends the admin token the app wrote at its first start."""
    token = Path(app.extensions[EXTENSION].settings.auth.admin_token_file).read_text().strip()
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Authenticated as admin: most tests are about what a request does, not who may send it
    (tests/test_auth.py covers that)."""
    return admin_client(app)


@pytest.fixture
def anon(app: Flask) -> FlaskClient:
    """No credentials: the anonymous role applies."""
    return app.test_client()


@pytest.fixture
def runtime(app: Flask) -> Runtime:
    return app.extensions[EXTENSION]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty database on the machine's real PostgreSQL, dropped after the test."""
    with _pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def pg_registry() -> Iterator[str]:
    """One database per test run, migrated to head once; each test that uses it starts from it
    emptied (:func:`pg_copy`)."""
    from modelyard.registry.db import make_engine, upgrade_to_head

    with _pg_database() as url:
        engine = make_engine(url)
        upgrade_to_head(engine)
        engine.dispose()
        yield url


@pytest.fixture
def pg_copy(pg_registry: str) -> str:
    """The run's PostgreSQL registry database, as a fresh migration leaves it: every connection a
    previous test left is cut, every table but Alembic's emptied (a copy of a template per test
    cost ~0.3 s more each: CREATE and DROP DATABASE)."""
    import psycopg

    from modelyard.registry.models import Base

    plain = pg_registry.replace("postgresql+psycopg://", "postgresql://", 1)
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        conn.execute("INSERT INTO registry_state (id, generation) VALUES (1, 0)")
    return pg_registry


@contextlib.contextmanager
def _pg_database() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    name = f"modelyard_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
