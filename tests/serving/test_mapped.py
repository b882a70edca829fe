"""One resident copy of a model's arrays per host (issue 27): the first process to load a version
writes its verified estimator to the host's mapped directory, and every process maps it back
(copy-on-write) through the restricted unpickler, the file's digest checked first. A damaged or
hostile copy is written again from the artifact; a write to an array never reaches the file;
trees and forests are compiled to flat arrays and mapped (scikit-learn would copy their nodes
into every worker), so is a pipeline's last step when it is a forest (its other steps mapped
from joblib), and trees held anywhere else leave a model alone; a deleted version's copy goes with it.
Both backends."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor, VotingRegressor
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeRegressor

from modelyard.app import create_app
from modelyard.serving.forest import ARRAYS, CompiledForest
from modelyard.serving.mapped import ForestPipeline, MappedStore, worth_mapping
from modelyard.web.context import EXTENSION
from tests.conftest import admin_client

RNG = np.random.default_rng(5)
X = RNG.normal(size=(3000, 6))
Y = X @ np.arange(1.0, 7.0)
ROWS = X[:7]


def _app(config: dict[str, dict[str, Any]]) -> Flask:
    return create_app({**config, "cache": {**config["cache"], "mapped_min_bytes": 1}})


@pytest.fixture
def mapped_app(config: dict[str, dict[str, Any]]) -> Any:
    app = _app(config)
    yield app
    app.extensions[EXTENSION].engine.dispose()


def _upload(client: FlaskClient, name: str, estimator: Any) -> dict[str, Any]:
    response = client.post(f"/models/{name}/versions", data={"file": (io.BytesIO(pickle.dumps(estimator)), "m.pkl")},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.json
    return response.json


def _predict(client: FlaskClient, name: str) -> list[Any]:
    answer = client.post(f"/models/{name}/1/predict", json=ROWS.tolist())
    assert answer.status_code == 200, answer.json
    return answer.json["predictions"]


def _loaded(app: Flask, name: str, sha256: str) -> Any:
    predictor = app.extensions[EXTENSION].predictor
    return predictor.entry(lambda: app.extensions[EXTENSION].sessions(), name, 1, sha256).value.estimator


def _root(app: Flask) -> Path:
    return Path(app.extensions[EXTENSION].settings.cache.mapped_root)


def test_a_version_is_served_from_one_mapped_copy_in_every_process(mapped_app: Flask,
                                                                   config: dict[str, dict[str, Any]]) -> None:
    client = admin_client(mapped_app)
    model = KNeighborsRegressor().fit(X, Y)
    sha256 = _upload(client, "knn", model)["sha256"]
    assert _predict(client, "knn") == model.predict(ROWS).tolist()
    copy = _root(mapped_app) / f"{sha256}.joblib"
    assert copy.is_file() and (_root(mapped_app) / f"{sha256}.json").is_file()
    fitted = _loaded(mapped_app, "knn", sha256)._fit_X
    assert isinstance(fitted, np.memmap) and Path(fitted.filename) == copy
    written = copy.stat().st_mtime_ns

    other = _app(config)  # another worker on this host: maps the same file, writes nothing
    try:
        assert _predict(admin_client(other), "knn") == model.predict(ROWS).tolist()
        assert Path(_loaded(other, "knn", sha256)._fit_X.filename) == copy
        assert copy.stat().st_mtime_ns == written
    finally:
        other.extensions[EXTENSION].engine.dispose()


def test_a_write_to_a_mapped_array_never_reaches_the_file_or_another_process(mapped_app: Flask,
                                                                             config: dict[str, dict[str, Any]]) -> None:
    client = admin_client(mapped_app)
    model = make_pipeline(StandardScaler(), SVC()).fit(X, Y > 0)
    sha256 = _upload(client, "svc", model)["sha256"]
    expected = model.predict(ROWS).tolist()
    assert _predict(client, "svc") == expected  # libsvm asks for writable buffers: the map is copy-on-write
    copy = (_root(mapped_app) / f"{sha256}.joblib").read_bytes()
    vectors = _loaded(mapped_app, "svc", sha256)[-1].support_vectors_
    assert isinstance(vectors, np.memmap)
    vectors[:] = 0.0  # a private page now; the file and other processes still see the model
    assert (_root(mapped_app) / f"{sha256}.joblib").read_bytes() == copy
    other = _app(config)
    try:
        assert _predict(admin_client(other), "svc") == expected
    finally:
        other.extensions[EXTENSION].engine.dispose()


def test_a_damaged_or_hostile_copy_is_written_again_from_the_artifact(mapped_app: Flask, tmp_path: Path,
                                                                       config: dict[str, dict[str, Any]]) -> None:
    import joblib

    client = admin_client(mapped_app)
    model = KNeighborsRegressor().fit(X, Y)
    sha256 = _upload(client, "knn", model)["sha256"]
    _predict(client, "knn")
    data, meta = _root(mapped_app) / f"{sha256}.joblib", _root(mapped_app) / f"{sha256}.json"
    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    data.write_bytes(bytes(damaged))
    marker = tmp_path / "ran"

    class Hostile:
        def __reduce__(self) -> Any:
            return os.system, (f"touch {marker}",)

    for attempt in ("damaged", "hostile"):
        if attempt == "hostile":  # a copy replaced along with its digest: the unpickler still refuses it
            joblib.dump(Hostile(), data, compress=0)
            recorded = json.loads(meta.read_text())
            recorded["digest"] = __import__("hashlib").sha256(data.read_bytes()).hexdigest()
            meta.write_text(json.dumps(recorded))
        other = _app(config)
        try:
            assert _predict(admin_client(other), "knn") == model.predict(ROWS).tolist(), attempt
            assert isinstance(_loaded(other, "knn", sha256)._fit_X, np.memmap)  # mapped again, from a new copy
        finally:
            other.extensions[EXTENSION].engine.dispose()
    assert not marker.exists()


def test_a_forest_is_compiled_to_flat_arrays_mapped_once_and_explained_from_them(
        mapped_app: Flask, config: dict[str, dict[str, Any]]) -> None:
    client = admin_client(mapped_app)
    forest = RandomForestRegressor(n_estimators=4, max_depth=6, random_state=0).fit(X, Y)
    assert not worth_mapping(forest) and worth_mapping(KNeighborsRegressor().fit(X, Y))
    sha256 = _upload(client, "forest", forest)["sha256"]
    assert _predict(client, "forest") == forest.predict(ROWS).tolist()
    assert not (_root(mapped_app) / f"{sha256}.joblib").exists()
    folder = _root(mapped_app) / f"{sha256}.forest"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{name}.npy" for name in ARRAYS)
    compiled = _loaded(mapped_app, "forest", sha256)
    assert isinstance(compiled, CompiledForest) and isinstance(compiled.arrays["threshold"], np.memmap)
    explained = client.post("/models/forest/1/predict?explain=true", json=ROWS[:2].tolist()).json["explanations"]
    plain_app = create_app({**config, "cache": {**config["cache"], "mapped": False}})
    try:
        expected = admin_client(plain_app).post("/models/forest/1/predict?explain=true",
                                                json=ROWS[:2].tolist()).json["explanations"]
    finally:
        plain_app.extensions[EXTENSION].engine.dispose()
    assert explained == expected  # the same TreeSHAP on the same nodes, read from the mapped arrays

    damaged = folder / "threshold.npy"
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"\x00" * 8)
    other = _app(config)
    try:
        assert _predict(admin_client(other), "forest") == forest.predict(ROWS).tolist()
        assert isinstance(_loaded(other, "forest", sha256), CompiledForest)
    finally:
        other.extensions[EXTENSION].engine.dispose()


def test_a_pipeline_ending_in_a_forest_is_mapped_trees_elsewhere_are_not_and_small_models_are_simply_loaded(
        mapped_app: Flask, config: dict[str, dict[str, Any]]) -> None:
    client = admin_client(mapped_app)
    pipeline = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=3, random_state=0)).fit(X, Y > 0)
    assert not worth_mapping(pipeline)
    sha256 = _upload(client, "piped", pipeline)["sha256"]
    answer = client.post("/models/piped/1/predict?proba=true", json=ROWS.tolist()).json
    assert answer["predictions"] == pipeline.predict(ROWS).tolist()
    assert answer["probabilities"] == pipeline.predict_proba(ROWS).tolist()
    mapped = _loaded(mapped_app, "piped", sha256)  # the scaler mapped from joblib, the forest from its arrays
    assert isinstance(mapped, ForestPipeline) and isinstance(mapped.forest.arrays["threshold"], np.memmap)
    assert isinstance(mapped.head.steps[0][1].scale_, np.memmap)
    head = _root(mapped_app) / f"{sha256}.joblib"
    head.write_bytes(head.read_bytes()[:-8] + b"\x00" * 8)  # damaged: written again from the artifact
    other = _app(config)
    try:
        assert admin_client(other).post("/models/piped/1/predict", json=ROWS.tolist()).json["predictions"] == \
            pipeline.predict(ROWS).tolist()
        assert isinstance(_loaded(other, "piped", sha256), ForestPipeline)
    finally:
        other.extensions[EXTENSION].engine.dispose()

    voting = VotingRegressor([("ridge", Ridge()), ("tree", DecisionTreeRegressor(random_state=0))]).fit(X, Y)
    sha256 = _upload(client, "voting", voting)["sha256"]
    assert _predict(client, "voting") == voting.predict(ROWS).tolist()
    assert not any(_root(mapped_app).glob(f"{sha256}.*"))  # its tree is not a pipeline's last step: left as it is
    default = create_app(config)  # [cache] mapped_min_bytes 1 MiB: the seeded Iris SVC is loaded as it is
    try:
        iris = admin_client(default).get("/models/iris/versions/1").json["sha256"]
        assert admin_client(default).post("/models/iris/1/predict", json=[[5.1, 3.5, 1.4, 0.2]]).status_code == 200
        assert not isinstance(_loaded(default, "iris", iris).support_vectors_, np.memmap)
        assert isinstance(_loaded(mapped_app, "iris", iris).support_vectors_, np.memmap)  # mapped_min_bytes 1
    finally:
        default.extensions[EXTENSION].engine.dispose()


def test_a_deleted_versions_copy_goes_with_it_and_a_start_removes_strays(mapped_app: Flask,
                                                                         config: dict[str, dict[str, Any]]) -> None:
    client = admin_client(mapped_app)
    sha256 = _upload(client, "knn", KNeighborsRegressor().fit(X, Y))["sha256"]
    _predict(client, "knn")
    assert (_root(mapped_app) / f"{sha256}.joblib").exists()
    assert client.delete("/models/knn/versions/1").status_code == 204
    assert not (_root(mapped_app) / f"{sha256}.joblib").exists()
    stray = _root(mapped_app) / ("0" * 64 + ".joblib")
    stray.write_bytes(b"left by a version deleted through another server")
    restarted = _app(config)
    try:
        assert not stray.exists()
    finally:
        restarted.extensions[EXTENSION].engine.dispose()


def test_an_unwritable_directory_serves_from_memory(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    store = MappedStore(blocked / "mapped", min_bytes=1)
    model = KNeighborsRegressor().fit(X, Y)
    from modelyard.registry.safety import Loaded

    loaded = store.load("a" * 64, 10**9, lambda: Loaded(model, [], None))
    assert loaded.estimator is model
