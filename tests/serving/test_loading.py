"""Estimators are loaded once per version through the safety gate, and a tampered or missing
artifact is a clean error, never an unpickled surprise."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from modelyard.registry.storage import stream_of
from modelyard.serving.service import cache_key
from modelyard.web.context import Runtime
from tests.factories import make_version, tamper

SETOSA = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}


def test_seeded_production_is_preloaded_at_start(runtime: Runtime) -> None:
    assert [key[:2] for key in runtime.predictor.cache.keys()] == [("iris", 1)]


def test_each_version_is_loaded_once(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers")
    loads = runtime.predictor.cache.stats.loads
    for _ in range(5):
        assert client.post("/models/flowers/1/predict", json=SETOSA).status_code == 200
    assert runtime.predictor.cache.stats.loads == loads + 1


def test_tampered_artifact_is_refused(client: FlaskClient, runtime: Runtime) -> None:
    version = make_version(runtime, "flowers")
    original = stream_of(runtime.store.open(version.sha256)).read()
    tamper(runtime.store, version.sha256, original[:-1] + b"!")
    response = client.post("/models/flowers/1/predict", json=SETOSA)
    assert response.status_code == 503
    assert "checksum" in response.json["message"]
    assert runtime.predictor.cache.peek(cache_key("flowers", 1, version.sha256)) is None


def test_missing_artifact_is_503_and_readyz_says_so(client: FlaskClient, runtime: Runtime) -> None:
    version = make_version(runtime, "iris", alias="production")
    runtime.store.delete(version.sha256)
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


def test_a_hostile_blob_behind_a_valid_row_is_refused_at_serve_time(client: FlaskClient, runtime: Runtime,
                                                                     tmp_path: Any) -> None:
    """The restricted unpickler guards serving too: a blob swapped in behind a row (its digest
    matching, as an attacker with write access to the store and the database would make it)."""
    import os
    import pickle

    from sqlalchemy import update

    from modelyard.registry.models import ModelVersion

    class Payload:
        def __reduce__(self) -> Any:
            return os.system, (f"touch {tmp_path / 'owned'}",)

    make_version(runtime, "flowers")
    sha256 = runtime.store.put(pickle.dumps(Payload()))
    with runtime.sessions() as session:
        session.execute(update(ModelVersion).values(sha256=sha256).where(ModelVersion.version == 1,
                                                                        ModelVersion.model.has(name="flowers")))
        session.commit()
    response = client.post("/models/flowers/1/predict", json=SETOSA)
    assert response.status_code == 422
    assert response.json["errors"]["globals"] == ["posix.system"]
    assert not (tmp_path / "owned").exists()


def test_the_cache_evicts_past_max_entries_through_the_running_app(config: dict[str, Any]) -> None:
    from modelyard.app import create_app
    from modelyard.web.context import EXTENSION
    from tests.conftest import admin_client

    app = create_app({**config, "cache": {**config["cache"], "max_entries": 1}})
    rt = app.extensions[EXTENSION]
    client = admin_client(app)
    make_version(rt, "flowers")
    assert client.post("/models/flowers/1/predict", json=SETOSA).status_code == 200  # evicts iris
    assert client.get("/models/iris/versions/1").json["loaded"] is False
    assert client.get("/models/flowers/versions/1").json["loaded"] is True
    metrics = client.get("/metrics").get_data(as_text=True)
    assert _sample(metrics, "modelyard_cache_evictions_total") >= 1
    assert client.post("/predict", json=SETOSA).json["predictions"] == [0]  # reloaded on demand
    assert client.get("/models/flowers/versions/1").json["loaded"] is False
    rt.engine.dispose()


def test_the_cache_evicts_past_max_bytes(config: dict[str, Any]) -> None:
    from modelyard.app import create_app
    from modelyard.web.context import EXTENSION
    from tests.conftest import admin_client

    # the seeded SVC is 2,643 bytes, the logreg 825
    app = create_app({**config, "cache": {**config["cache"], "max_bytes": 3000}})
    rt = app.extensions[EXTENSION]
    client = admin_client(app)
    make_version(rt, "flowers")
    assert client.post("/models/flowers/1/predict", json=SETOSA).status_code == 200
    assert [key[0] for key in rt.predictor.cache.keys()] == ["flowers"]
    rt.engine.dispose()


def _sample(metrics: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name))
