"""Estimators are loaded once per version through the safety gate, and a tampered or missing
artifact is a clean error, never an unpickled surprise."""

from __future__ import annotations

from flask.testing import FlaskClient

from modelyard.runtime import Runtime
from serving.service import cache_key
from tests.factories import make_version

SETOSA = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}


def test_seeded_production_is_preloaded_at_start(runtime: Runtime) -> None:
    assert [key[:2] for key in runtime.cache.keys()] == [("iris", 1)]


def test_each_version_is_loaded_once(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers")
    loads = runtime.cache.stats.loads
    for _ in range(5):
        assert client.post("/models/flowers/1/predict", json=SETOSA).status_code == 200
    assert runtime.cache.stats.loads == loads + 1


def test_tampered_artifact_is_refused(client: FlaskClient, runtime: Runtime) -> None:
    version = make_version(runtime, "flowers")
    path = runtime.store.path_for(version["sha256"])  # type: ignore[attr-defined]
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    response = client.post("/models/flowers/1/predict", json=SETOSA)
    assert response.status_code == 503
    assert "checksum" in response.json["message"]
    assert runtime.cache.peek(cache_key("flowers", 1, version["sha256"])) is None


def test_missing_artifact_is_503_and_readyz_says_so(client: FlaskClient, runtime: Runtime) -> None:
    version = make_version(runtime, "iris", alias="production")
    runtime.store.delete(version["sha256"])
    assert client.post("/predict", json=SETOSA).status_code == 503
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "missing" in response.json["checks"]["default_model"]


def test_version_detail_shows_cache_state(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers")
    before = client.get("/models/flowers/versions/1").json
    assert (before["loaded"], before["load_ms"], before["last_used"]) == (False, None, None)
    client.post("/models/flowers/1/predict", json=SETOSA)
    after = client.get("/models/flowers/versions/1").json
    assert after["loaded"] is True and after["load_ms"] > 0 and after["last_used"].endswith("+00:00")
    assert after["size_bytes"] > 0
