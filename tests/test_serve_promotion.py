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
    from modelyard.registry import service
    from modelyard.registry.db import make_engine, make_session_factory

    with running_server(tmp_path, database_url=pg_url) as server:
        assert _served_versions(server) == {1}
        _upload_version_2(server)
        engine = make_engine(pg_url)
        try:
            with make_session_factory(engine)() as session:  # this process, not the server's
                assert service.promote(session, "iris", "2", actor="test").previous_version == 1
                assert _served_versions(server) == {2}
                service.rollback_alias(session, "iris", "production", actor="test")
                assert _served_versions(server) == {1}
        finally:
            engine.dispose()
