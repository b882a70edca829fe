"""A promotion or rollback is served on the next request, by every process: the real serve
command with two workers, fresh connections, on SQLite and on PostgreSQL with the promotion
made by another process (this test's, through the service layer)."""

from __future__ import annotations

import json
import pickle
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.factories import fitted_logreg
from tests.serve_helpers import ENGINES, running_server

SETOSA = json.dumps({"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}).encode()


def _call(server: dict[str, Any], method: str, path: str, body: bytes | None = None,
          content_type: str = "application/json") -> Any:
    headers = {"Authorization": f"Bearer {server['token']}"}
    if body is not None:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(server["base"] + path, data=body, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:  # a fresh connection each time
        return json.loads(response.read())


def _upload_version_2(server: dict[str, Any]) -> None:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.pkl\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + pickle.dumps(fitted_logreg()) + (
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"features\"\r\n\r\n"
            '["sepal.length", "sepal.width", "petal.length", "petal.width"]'
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"feature_aliases\"\r\n\r\n"
            '{"sepal.lenght": "sepal.length", "petal.lenght": "petal.length"}'
            f"\r\n--{boundary}--\r\n").encode()
    assert _call(server, "POST", "/models/iris/versions", body,
                 f"multipart/form-data; boundary={boundary}")["version"] == 2


def _served_versions(server: dict[str, Any], count: int = 24) -> set[int]:
    return {_call(server, "POST", "/predict", SETOSA)["version"] for _ in range(count)}


@pytest.mark.parametrize("engine", ENGINES)
def test_promotion_and_rollback_reach_every_worker(tmp_path: Path, engine: str) -> None:
    with running_server(tmp_path, engine=engine) as server:
        assert _served_versions(server) == {1}
        _upload_version_2(server)
        move = _call(server, "POST", "/models/iris/versions/2/promote", b'{"alias": "production"}')
        assert move == {"alias": "production", "version": 2, "previous_version": 1}
        assert _served_versions(server) == {2}
        _call(server, "POST", "/models/iris/aliases/production/rollback")
        assert _served_versions(server) == {1}


def test_a_promotion_by_another_process_on_postgresql_is_served_at_once(tmp_path: Path, pg_url: str) -> None:
    from modelyard.registry import aliases
    from modelyard.registry.db import make_engine, make_session_factory

    with running_server(tmp_path, database_url=pg_url) as server:
        assert _served_versions(server) == {1}
        _upload_version_2(server)
        engine = make_engine(pg_url)
        try:
            with make_session_factory(engine)() as session:  # this process, not the server's
                assert aliases.promote(session, "iris", "2", actor="test").previous_version == 1
                assert _served_versions(server) == {2}
                aliases.rollback_alias(session, "iris", "production", actor="test")
                assert _served_versions(server) == {1}
        finally:
            engine.dispose()


def test_the_generation_read_survives_its_connection_being_cut_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """Each server thread's generation read holds a connection of its own with a statement
    prepared on it: when PostgreSQL drops it (a restart, an idle timeout), the next request opens
    and prepares a new one, and a promotion is still answered at once."""
    import io

    from sqlalchemy import create_engine, text

    from modelyard.app import create_app
    from modelyard.web.context import EXTENSION
    from tests.conftest import admin_client, config_in

    app = create_app(config_in(tmp_path, database={"url": pg_url}))
    client = admin_client(app)
    setosa = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}
    assert client.post("/predict", json=setosa).json["version"] == 1
    form = {"file": (io.BytesIO(pickle.dumps(fitted_logreg())), "m.pkl"), "features": json.dumps(list(setosa))}
    uploaded = client.post("/models/iris/versions", data=form, content_type="multipart/form-data")
    assert uploaded.status_code == 201, uploaded.json
    killer = create_engine(pg_url)
    try:
        for promoted in (2, 1):
            with killer.connect() as conn:
                cut = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
            assert cut and cut >= 1
            assert client.post(f"/models/iris/versions/{promoted}/promote").status_code == 200
            answer = client.post("/predict", json=setosa)
            assert answer.status_code == 200 and answer.json["version"] == promoted
    finally:
        killer.dispose()
        app.extensions[EXTENSION].engine.dispose()
