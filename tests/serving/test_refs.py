"""The predict path's ref cache: no registry query per request once warm, and still never a
stale answer after a write made anywhere (another app on the same database stands in for
another server process)."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import event

from modelyard.app import create_app
from modelyard.web.context import Runtime
from tests.conftest import admin_client
from tests.factories import make_version

SETOSA = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}


def test_a_warm_predict_runs_no_registry_query(anon: FlaskClient, runtime: Runtime) -> None:
    statements: list[str] = []
    event.listen(runtime.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    anon.post("/predict", json=SETOSA)
    statements.clear()
    for _ in range(5):
        assert anon.post("/predict", json=SETOSA).status_code == 200
    assert statements == []


def test_a_promotion_by_another_server_is_seen_on_the_next_request(anon: FlaskClient, config: dict[str, Any]) -> None:
    other = create_app(config)  # same database, its own engine and caches
    other_client = admin_client(other)
    assert anon.post("/predict", json=SETOSA).json["version"] == 1
    make_version(other.extensions["modelyard"], "iris")
    assert other_client.post("/models/iris/versions/2/promote").status_code == 200
    assert anon.post("/predict", json=SETOSA).json["version"] == 2
    assert other_client.post("/models/iris/aliases/production/rollback").status_code == 200
    assert anon.post("/predict", json=SETOSA).json["version"] == 1


def test_a_deleted_model_is_404_on_the_next_request(anon: FlaskClient, client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers")
    assert anon.post("/models/flowers/latest/predict", json=SETOSA).status_code == 200
    assert client.delete("/models/flowers").status_code == 204
    assert anon.post("/models/flowers/latest/predict", json=SETOSA).status_code == 404


def test_latest_follows_new_uploads(anon: FlaskClient, runtime: Runtime) -> None:
    assert anon.post("/models/iris/latest/predict", json=SETOSA).json["version"] == 1
    make_version(runtime, "iris")
    assert anon.post("/models/iris/latest/predict", json=SETOSA).json["version"] == 2
