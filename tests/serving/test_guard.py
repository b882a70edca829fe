"""Guarded canaries: a weighted alias with a rule returns to its state before the canary by
itself when a candidate version's error rate, disagreement or p99 latency over the window passes
the limit on at least min_samples requests; fewer samples are inconclusive, never a trip. On both
backends, through the app (the counts are flushed and checked as a worker's flush does)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier
from sqlalchemy import select

from modelyard.registry import guards
from modelyard.registry.db import utcnow
from modelyard.registry.models import Guard, GuardCount
from modelyard.web.context import Runtime
from tests.factories import X, fitted_logreg, make_version, y

CODES = np.array([[a, b] for a in range(3) for b in range(3)] * 4, dtype=float)
LABELS = (CODES[:, 0] + CODES[:, 1] > 2).astype(int)
KNOWN = {"inputs": [[0, 1], [2, 2]]}
UNSEEN = {"inputs": [[7, 1]]}  # a category the encoders never saw
RULE = {"metric": "error_rate", "max": 0.05, "window_seconds": 300, "min_samples": 20}


def _encoder(unknown: str) -> Any:
    return make_pipeline(OneHotEncoder(handle_unknown=unknown), LogisticRegression()).fit(CODES, LABELS)


@pytest.fixture
def shop(runtime: Runtime) -> None:
    """shop 1 (production) ignores unseen categories; 2 refuses them (a broken candidate); 3 is 1 again."""
    for unknown, alias in (("ignore", "production"), ("error", None), ("ignore", None)):
        make_version(runtime, "shop", _encoder(unknown), feature_names=["a", "b"], labels=None, alias=alias)


def _canary(client: FlaskClient, weights: dict[str, int], rule: dict[str, Any] = RULE, model: str = "shop") -> Any:
    response = client.put(f"/models/{model}/aliases/production", json={"weights": weights, "guard": rule})
    assert response.status_code == 200, response.json
    return response.json


def _send(client: FlaskClient, n: int, body: dict[str, Any], key: str = "k", model: str = "shop") -> list[int]:
    statuses = []
    for i in range(n):
        response = client.post(f"/models/{model}/production/predict", json=body, headers={"X-Request-Key": f"{key}{i}"})
        statuses.append(response.status_code)
    return statuses


def test_a_broken_candidate_is_rolled_back_with_the_measure(client: FlaskClient, runtime: Runtime,
                                                            shop: None) -> None:
    moved = _canary(client, {"1": 50, "2": 50})
    assert moved["guard"] == RULE and client.get("/models/shop/aliases").json == {
        "production": {"weights": {"1": 50, "2": 50}, "guard": RULE}}
    statuses = _send(client, 80, UNSEEN)
    assert set(statuses) == {200, 422}  # version 1 answers them; the candidate refuses them
    refused = client.post("/models/shop/2/predict", json=UNSEEN)
    assert refused.status_code == 422 and "could not predict these rows: ValueError" in refused.json["message"]
    runtime.predictor.flush_counts()  # a worker's flush: counts appended, the guard checked
    assert client.get("/models/shop/aliases").json == {"production": 1}
    assert client.get("/models/shop/aliases/production/guard").status_code == 404
    event = client.get("/models/shop/events").json[0]
    assert (event["action"], event["actor"], event["alias"]) == ("alias.guard_tripped", "guard", "production")
    tripped = event["after"]["tripped"]
    assert tripped["metric"] == "error_rate" and tripped["version"] == 2 and tripped["value"] == 1.0
    assert tripped["samples"] == statuses.count(422) >= RULE["min_samples"]
    history = client.get("/models/shop/aliases/production/history").json
    assert [h["action"] for h in history[:2]] == ["alias.guard_tripped", "alias.moved"]
    assert history[0]["version"] == 1 and history[1]["weights"] == {"1": 50, "2": 50} and history[1]["guard"] == RULE
    assert set(_send(client, 20, UNSEEN)) == {200}  # everything on version 1 again
    # a rollback returns to the canary, guarded again (against the state it leaves)
    back = client.post("/models/shop/aliases/production/rollback")
    assert back.status_code == 200 and back.json["weights"] == {"1": 50, "2": 50} and back.json["guard"] == RULE


def test_too_few_samples_is_inconclusive_never_a_trip(client: FlaskClient, runtime: Runtime, shop: None) -> None:
    _canary(client, {"1": 50, "2": 50}, {**RULE, "min_samples": 1000})
    _send(client, 60, UNSEEN)
    runtime.predictor.flush_counts()
    status = client.get("/models/shop/aliases/production/guard").json
    assert status["verdict"] == "inconclusive" and status["candidates"]["2"]["verdict"] == "inconclusive"
    assert status["candidates"]["2"]["measure"] == 1.0 and status["candidates"]["2"]["errors"] > 0
    assert status["baseline"] == {"version": 1} and client.get("/models/shop/aliases").json["production"]["weights"]


def test_a_healthy_candidate_stays(client: FlaskClient, runtime: Runtime, shop: None) -> None:
    _canary(client, {"1": 50, "3": 50})
    _send(client, 80, UNSEEN)
    _send(client, 40, {"inputs": [["x", 1]]}, key="bad")  # rows that do not decode: the caller's, not counted
    runtime.predictor.flush_counts()
    status = client.get("/models/shop/aliases/production/guard").json
    assert status["verdict"] == "ok" and status["candidates"]["3"]["errors"] == 0
    assert status["candidates"]["3"]["requests"] >= RULE["min_samples"]
    assert status["candidates"].keys() == {"3"}  # version 1 was the baseline: not watched


def test_disagreement_runs_the_baseline_on_what_the_candidate_served(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers", alias="production")
    make_version(runtime, "flowers", DecisionTreeClassifier(max_depth=1, random_state=0).fit(X, y))
    _canary(client, {"1": 50, "2": 50}, {"metric": "disagreement", "max": 0.2, "window_seconds": 60,
                                         "min_samples": 100}, model="flowers")
    _send(client, 30, {"inputs": X[::10].tolist()}, model="flowers")
    runtime.predictor.flush_counts()
    event = client.get("/models/flowers/events").json[0]
    tree = DecisionTreeClassifier(max_depth=1, random_state=0).fit(X, y).predict(X[::10])
    expected = 1 - float(np.mean(tree == fitted_logreg().predict(X[::10])))
    assert event["action"] == "alias.guard_tripped"
    assert event["after"]["tripped"]["value"] == pytest.approx(expected) and expected > 0.2
    assert client.get("/models/flowers/aliases").json == {"production": 1}


def test_p99_latency_over_the_limit_trips(client: FlaskClient, runtime: Runtime, shop: None) -> None:
    _canary(client, {"1": 50, "3": 50}, {"metric": "p99_ms", "max": 0.001, "window_seconds": 60, "min_samples": 10})
    _send(client, 60, KNOWN)
    runtime.predictor.flush_counts()
    event = client.get("/models/shop/events").json[0]
    assert event["action"] == "alias.guard_tripped" and event["after"]["tripped"]["value"] > 0.001


def test_only_the_window_counts(client: FlaskClient, runtime: Runtime, shop: None) -> None:
    _canary(client, {"1": 50, "2": 50}, {**RULE, "window_seconds": 60})
    with runtime.sessions() as session:  # errors counted two minutes ago, by another server
        guard_id = session.scalar(select(Guard.id))
        session.add(GuardCount(guard_id=guard_id, version=2, requests=500, errors=500, rows=0, rows_disagreed=0,
                               latency_ms=guards.Counts().latency_ms,
                               at=utcnow() - dt.timedelta(seconds=120)))
        session.commit()
    status = client.get("/models/shop/aliases/production/guard").json
    assert status["candidates"]["2"]["requests"] == 0 and status["verdict"] == "inconclusive"


def test_counts_of_every_process_add_up(client: FlaskClient, runtime: Runtime, shop: None) -> None:
    """Two flushes of 12 failures each (two workers) make 24 samples: over min_samples 20 together."""
    _canary(client, {"1": 50, "2": 50})
    with runtime.sessions() as session:
        guard_id = session.scalar(select(Guard.id))
        for _ in range(2):
            counts = guards.Counts(requests=12, errors=12)
            assert guards.add_counts(session, guard_id, {2: counts})
            assert guards.check(session, guard_id)["verdict"] in ("inconclusive", "tripped")
    assert client.get("/models/shop/aliases").json == {"production": 1}


@pytest.mark.parametrize(("body", "message"), [
    ({"weights": {"1": 90, "2": 10}, "guard": {"metric": "accuracy", "max": 0.1}}, "metric must be one of"),
    ({"weights": {"1": 90, "2": 10}, "guard": {"metric": "error_rate", "max": 2}}, "share below 1"),
    ({"weights": {"1": 90, "2": 10}, "guard": {"metric": "error_rate", "max": -1}}, "number >= 0"),
    ({"weights": {"1": 90, "2": 10}, "guard": {"metric": "error_rate", "max": 0.1, "window_seconds": 0}},
     "window_seconds must be a whole number"),
    ({"weights": {"1": 90, "2": 10}, "guard": {"metric": "error_rate", "max": 0.1, "min_samples": 1.5}},
     "min_samples must be a whole number"),
    ({"weights": {"1": 90, "2": 10}, "guard": {"metric": "error_rate", "max": 0.1, "windows": 3}}, "unknown field"),
    ({"weights": {"1": 90, "2": 10}, "guard": [1]}, "guard must be an object"),
    ({"weights": {"1": 100, "2": 0}, "guard": RULE}, "already served it"),
    ({"version": 2, "guard": RULE}, "give it with weights"),
])
def test_a_bad_guard_is_a_422_and_changes_nothing(client: FlaskClient, shop: None, body: dict[str, Any],
                                                   message: str) -> None:
    response = client.put("/models/shop/aliases/production", json=body)
    assert response.status_code == 422 and message in str(response.json), response.json
    assert client.get("/models/shop/aliases").json == {"production": 1}


def test_a_new_alias_cannot_be_guarded_and_an_alias_without_a_guard_has_none(client: FlaskClient,
                                                                              shop: None) -> None:
    response = client.put("/models/shop/aliases/staging", json={"weights": {"1": 90, "2": 10}, "guard": RULE})
    assert response.status_code == 422 and "exist before the canary" in response.json["message"]
    assert client.get("/models/shop/aliases/staging/guard").status_code == 404
    assert client.get("/models/shop/aliases/production/guard").json["message"].endswith("has no guard: give it "
                                                                                       "weights with a guard")


def test_any_move_ends_the_guard_and_new_weights_keep_the_baseline(client: FlaskClient, shop: None) -> None:
    _canary(client, {"1": 90, "2": 10})
    _canary(client, {"1": 50, "2": 50})  # the canary goes on: still against version 1
    assert client.get("/models/shop/aliases/production/guard").json["baseline"] == {"version": 1}
    assert client.delete("/models/shop/versions/1").status_code == 409  # the guard returns there
    assert client.post("/models/shop/versions/2/promote").status_code == 200
    assert client.get("/models/shop/aliases/production/guard").status_code == 404
    assert client.get("/models/shop/aliases").json == {"production": 2}
