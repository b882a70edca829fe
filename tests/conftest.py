"""Shared fixtures: an app on a temp SQLite file and temp artifact root, and a real PostgreSQL
database per test session where the backend matters."""

from __future__ import annotations

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
    """A test configuration keeping the registry, artifacts and admin token in ``directory``."""
    return {
        "database": {"url": f"sqlite:///{directory / 'registry.db'}"},
        "artifacts": {"root": str(directory / "artifacts")},
        "auth": {"admin_token_file": str(directory / "admin.token")},
        **sections,
    }


@pytest.fixture
def config(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return config_in(tmp_path)


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
    """A fresh database on the machine's real PostgreSQL, dropped after the test."""
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
