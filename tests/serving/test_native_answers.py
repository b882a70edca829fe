"""The native protocol keeps the bytes of a one-row answer (a class, once written) on the loaded
version: every kept answer must be the answer written afresh, whatever the route, model, version
or class, and the kept ones stay bounded."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from flask.testing import FlaskClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from modelyard.serving.protocols import native
from modelyard.web.context import Runtime
from tests.factories import make_version

X, Y = load_iris(return_X_y=True)
FEATURES = ["sepal.length", "sepal.width", "petal.length", "petal.width"]
SETOSA = dict(zip(FEATURES, X[0].tolist(), strict=True))


def _record(row: np.ndarray) -> dict[str, float]:
    return dict(zip(FEATURES, row.tolist(), strict=True))


def test_the_tutorial_route_and_a_named_route_keep_answers_of_their_own(client: FlaskClient) -> None:
    tutorial = {"model": "iris", "version": 1, "predictions": [0], "labels": ["setosa"], "target_value": 0}
    named = {"model": "iris", "version": 1, "predictions": [0], "labels": ["setosa"]}
    for _ in range(2):  # the first of each writes, the second is kept
        assert json.loads(client.post("/predict", json=SETOSA).data) == tutorial
        assert json.loads(client.post("/models/iris/1/predict", json=SETOSA).data) == named
        assert json.loads(client.post("/models/iris/production/predict", json=SETOSA).data) == named
        assert client.post("/predict", json=[SETOSA]).json == named  # one row, not a bare record


def test_kept_answers_are_the_fresh_ones_for_every_kind_of_value(client: FlaskClient, runtime: Runtime) -> None:
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)[Y]
    make_version(runtime, "strings", LogisticRegression(max_iter=1000).fit(X, names), labels=None)
    make_version(runtime, "bools", LogisticRegression(max_iter=1000).fit(X, Y == 0), labels=None)
    make_version(runtime, "ints", LogisticRegression(max_iter=1000).fit(X, Y))
    make_version(runtime, "ints", DecisionTreeClassifier(random_state=0).fit(X, (Y + 1) % 3))  # version 2
    make_version(runtime, "floats", LinearRegression().fit(X, Y), labels=None)
    models: dict[tuple[str, int], Any] = {
        ("strings", 1): None, ("bools", 1): None, ("ints", 1): None, ("ints", 2): None, ("floats", 1): None}
    for name, version in models:
        models[name, version] = runtime.predictor.entry(  # type: ignore[attr-defined]
            lambda: runtime.sessions(), name, version, _sha256(client, name, version)).value.estimator
    for _ in range(2):
        for row in X[::7]:
            for (name, version), estimator in models.items():
                got = client.post(f"/models/{name}/{version}/predict", json=_record(row))
                assert got.status_code == 200, got.json
                value = estimator.predict(row.reshape(1, -1)).tolist()[0]
                expected: dict[str, Any] = {"model": name, "version": version, "predictions": [value]}
                if name == "ints":
                    expected["labels"] = [["setosa", "versicolor", "virginica"][value]]
                assert got.json == expected, (name, version)
                assert type(got.json["predictions"][0]) is type(value)
        asked = client.post("/models/ints/1/predict", json=SETOSA, query_string={"proba": "true"}).json
        assert asked["predictions"] == [0]
        assert asked["probabilities"] == models["ints", 1].predict_proba(X[:1]).tolist()


def test_kept_answers_are_bounded_a_version(client: FlaskClient, runtime: Runtime) -> None:
    """A classifier of 100 classes answers each one right, and keeps at most 64 answers."""
    rows = np.arange(100, dtype=float).reshape(-1, 1).repeat(4, axis=1)
    classes = np.arange(100).repeat(3)  # three rows a class: scikit-learn takes it for a classification
    make_version(runtime, "many", DecisionTreeClassifier(random_state=0).fit(rows.repeat(3, axis=0), classes),
                 labels=None)
    for _ in range(2):
        for klass, row in enumerate(rows):
            assert client.post("/models/many/1/predict", json=_record(row)).json["predictions"] == [klass]
    loaded = runtime.predictor.entry(  # type: ignore[attr-defined]
        lambda: runtime.sessions(), "many", 1, _sha256(client, "many", 1)).value
    assert len(loaded.answers) == native._KEPT_ANSWERS


def _sha256(client: FlaskClient, name: str, version: int) -> str:
    sha: str = client.get(f"/models/{name}/versions/{version}").json["sha256"]
    return sha
