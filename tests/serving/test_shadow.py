"""Shadows: a share of an alias's requests also run on another version after the answer, never
seen by the caller; the report (requests, compared, agreement, failures, dropped, max_abs_diff,
latency) adds up over every process on the registry. On both backends."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.tree import DecisionTreeClassifier

from modelyard.app import create_app
from modelyard.registry.refs import ShadowTarget
from modelyard.serving.service import Body, PredictOptions
from modelyard.serving.shadow import Job, ShadowRunner, compare, sampled
from modelyard.web.context import EXTENSION, Runtime
from tests.conftest import admin_client
from tests.factories import X, fitted_logreg, make_version, y

ROWS = {"inputs": X[::10].tolist()}


@pytest.fixture
def flowers(runtime: Runtime) -> None:
    """flowers 1 (production) and 2: the same LogisticRegression; 3: a shallow tree that disagrees."""
    make_version(runtime, "flowers", alias="production")
    make_version(runtime, "flowers")
    make_version(runtime, "flowers", DecisionTreeClassifier(max_depth=1, random_state=0).fit(X, y))


def _predict(client: FlaskClient, n: int, **headers: str) -> None:
    for _ in range(n):
        response = client.post("/models/flowers/production/predict", json=ROWS, headers=headers)
        assert response.status_code == 200 and response.json["version"] == 1, response.json


def test_a_shadow_that_agrees(client: FlaskClient, flowers: None) -> None:
    set_ = client.put("/models/flowers/aliases/production/shadow", json={"version": 2, "fraction": 1.0})
    assert set_.status_code == 200, set_.json
    assert {k: set_.json[k] for k in ("alias", "version", "fraction")} == {
        "alias": "production", "version": 2, "fraction": 1.0}
    _predict(client, 12)
    report = client.get("/models/flowers/aliases/production/shadow").json
    assert {k: report[k] for k in ("version", "fraction", "requests", "compared", "agreement", "rows", "failures",
                                   "dropped", "max_abs_diff")} == {
        "version": 2, "fraction": 1.0, "requests": 12, "compared": 12, "agreement": 1.0, "rows": 12 * 15,
        "failures": 0, "dropped": 0, "max_abs_diff": None}
    for side in ("primary", "shadow"):
        assert 0 < report["latency_ms"][side]["p50"] <= report["latency_ms"][side]["p99"]
    assert report["since"] == set_.json["since"]


def test_a_shadow_that_disagrees_is_measured(client: FlaskClient, flowers: None) -> None:
    client.put("/models/flowers/aliases/production/shadow", json={"version": 3, "fraction": 1.0})
    _predict(client, 4)
    report = client.get("/models/flowers/aliases/production/shadow").json
    tree = DecisionTreeClassifier(max_depth=1, random_state=0).fit(X, y).predict(X[::10])
    expected = float(np.mean(tree == fitted_logreg().predict(X[::10])))
    assert report["compared"] == 4 and report["agreement"] == pytest.approx(expected) and expected < 1


def test_a_failing_shadow_never_touches_the_answer(client: FlaskClient, runtime: Runtime, flowers: None) -> None:
    make_version(runtime, "flowers", fitted_logreg(), feature_names=["a", "b", "c", "d"])  # 4: other names
    client.put("/models/flowers/aliases/production/shadow", json={"version": 4, "fraction": 1.0})
    for _ in range(5):  # records by name: the shadow refuses them (unknown features), the primary answers
        response = client.post("/models/flowers/production/predict",
                               json=[dict(zip(["sepal.length", "sepal.width", "petal.length", "petal.width"], row))
                                     for row in X[:3].tolist()])
        assert response.status_code == 200 and response.json["predictions"] == [0, 0, 0]
    report = client.get("/models/flowers/aliases/production/shadow").json
    assert (report["requests"], report["compared"], report["failures"]) == (5, 0, 5)
    assert report["agreement"] is None and report["latency_ms"]["shadow"]["p50"] is None


def test_a_regressor_shadow_reports_its_largest_difference(client: FlaskClient, runtime: Runtime) -> None:
    target = X[:, 0] * 2 + X[:, 1]
    make_version(runtime, "price", LinearRegression().fit(X, target), labels=None, alias="production")
    make_version(runtime, "price", Ridge(alpha=10.0).fit(X, target), labels=None)
    client.put("/models/price/aliases/production/shadow", json={"version": 2, "fraction": 1.0})
    assert client.post("/models/price/production/predict", json=ROWS).status_code == 200
    report = client.get("/models/price/aliases/production/shadow").json
    expected = np.max(np.abs(LinearRegression().fit(X, target).predict(X[::10])
                             - Ridge(alpha=10.0).fit(X, target).predict(X[::10])))
    assert report["max_abs_diff"] == pytest.approx(expected) and report["agreement"] < 1


def test_sampling_by_key_is_stable_and_near_the_fraction(client: FlaskClient, flowers: None) -> None:
    client.put("/models/flowers/aliases/production/shadow", json={"version": 2, "fraction": 0.25})
    shadowed = [sampled(0.25, f"user-{i}") for i in range(2000)]
    assert abs(sum(shadowed) / 2000 - 0.25) < 0.04
    picked = next(i for i, s in enumerate(shadowed) if s)
    skipped = next(i for i, s in enumerate(shadowed) if not s)
    _predict(client, 6, **{"X-Request-Key": f"user-{picked}"})
    _predict(client, 6, **{"X-Request-Key": f"user-{skipped}"})
    assert client.get("/models/flowers/aliases/production/shadow").json["requests"] == 6


def test_counts_add_up_across_processes_on_one_registry(config: dict[str, Any], flowers: None,
                                                        client: FlaskClient) -> None:
    """A second app on the same registry (another worker, another server) adds its own counts."""
    client.put("/models/flowers/aliases/production/shadow", json={"version": 2, "fraction": 1.0})
    other = create_app(config, prepare=False)
    try:
        _predict(admin_client(other), 7)
        other.extensions[EXTENSION].predictor.flush_counts()
        _predict(client, 5)
        assert client.get("/models/flowers/aliases/production/shadow").json["compared"] == 12
    finally:
        other.extensions[EXTENSION].engine.dispose()


def test_setting_and_removing_a_shadow_and_its_refusals(client: FlaskClient, app: Flask, flowers: None) -> None:
    put = "/models/flowers/aliases/production/shadow"
    for body, status, words in (({"version": 2, "fraction": 0}, 422, "above 0"),
                                ({"version": 2, "fraction": 1.5}, 422, "at most 1"),
                                ({"version": 2}, 422, "fraction"), ({"version": 9, "fraction": 0.5}, 404, "'9'")):
        response = client.put(put, json=body)
        assert response.status_code == status and words in str(response.json), (body, response.json)
    assert client.put("/models/flowers/aliases/nope/shadow", json={"version": 2, "fraction": 0.5}).status_code == 404
    assert client.get(put).status_code == 404
    client.put(put, json={"version": 2, "fraction": 0.5})
    deleted = client.delete("/models/flowers/versions/2")
    assert deleted.status_code == 409 and "production (as its shadow)" in deleted.json["message"]
    from tests.serving.test_lane import _token

    uploader = app.test_client()
    uploader.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {_token(app, 'uploader')}"
    assert uploader.put(put, json={"version": 3, "fraction": 0.5}).status_code == 403  # production is protected
    assert client.delete(put).status_code == 204
    assert client.get(put).status_code == 404 and client.delete(put).status_code == 404
    assert client.delete("/models/flowers/versions/2").status_code == 204
    actions = [e["action"] for e in client.get("/models/flowers/events").json[:3]]
    assert actions[1:] == ["alias.shadow_removed", "alias.shadow_set"]


def test_a_full_queue_drops_and_counts(runtime: Runtime, flowers: None) -> None:
    predictor = runtime.predictor
    dropped: list[int] = []
    runner = ShadowRunner(predictor, runtime.sessions, max_queue=1, flush_s=60, on_drop=lambda: dropped.append(1))
    release = threading.Event()
    running = threading.Event()
    real = runner._shadow

    def slow(job: Job) -> None:
        running.set()
        release.wait(10)
        real(job)

    runner._shadow = slow  # type: ignore[method-assign]
    target = ShadowTarget(1, 2, predictor.resolve(runtime.sessions, "flowers", "2").sha256, 1.0)
    job = Job("flowers", target, Body(ROWS), PredictOptions(), np.zeros(15), 0.2)
    runner.offer(job)
    assert running.wait(5)
    for _ in range(4):  # one waits in the queue, three find it full
        runner.offer(job)
    release.set()
    runner.wait_idle()
    counts = runner._counts[1]
    assert (counts.requests, counts.dropped, counts.compared, len(dropped)) == (5, 3, 2, 3)


def test_compare() -> None:
    assert compare(np.array([0, 1, 2]), np.array([0, 2, 2])) == (3, 2, None)
    assert compare(np.array([1.0, 2.0]), np.array([1.0, 2.5])) == (2, 1, 0.5)
    assert compare(np.array(["a", "b"]), np.array(["a", "b"])) == (2, 2, None)
    assert compare(np.zeros((2, 2)), np.zeros(2)) == (2, 0, None)
