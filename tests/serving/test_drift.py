"""Drift (issue 26, parts 2 and 3): every request's rows are counted into the version's reference
bins, every process adds its counts to the registry, and the drift report compares a window with
the reference feature by feature (PSI, Jensen-Shannon, shares, missing rate, verdicts). Through
the API on both backends."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask.testing import FlaskClient
from scipy.spatial.distance import jensenshannon
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from modelyard.app import create_app
from modelyard.registry import drift, observe, profile
from modelyard.serving.observe import number_bins
from modelyard.web.context import EXTENSION
from tests.conftest import admin_client

RNG = np.random.default_rng(7)
FEATURES = ["a", "b", "c"]
TRAIN = RNG.normal(size=(2000, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, 1.0]
STD = TRAIN.std(axis=0)


@pytest.fixture
def watched(config: dict[str, dict[str, Any]]) -> Any:
    """Every request counted, a fifth of them logged, and a verdict from 100 values."""
    app = create_app({**config, "observe": {"sample_rate": 0.2, "min_samples": 100}})
    yield admin_client(app)
    app.extensions[EXTENSION].engine.dispose()


def _upload(client: FlaskClient, estimator: Any, reference: Any, name: str, **form: str) -> None:
    data: dict[str, Any] = {"file": (io.BytesIO(pickle.dumps(estimator)), "m.pkl"), **form}
    if reference is not None:
        data["reference"] = reference
    response = client.post(f"/models/{name}/versions", data=data, content_type="multipart/form-data")
    assert response.status_code == 201, response.json


def _regression(client: FlaskClient, name: str = "linear") -> None:
    model = LinearRegression().fit(TRAIN, TRAIN @ [1.0, 2.0, 3.0])
    _upload(client, model, json.dumps(TRAIN.tolist()), name, features=json.dumps(FEATURES))


def _send(client: FlaskClient, name: str, rows: np.ndarray, per_request: int = 10) -> None:
    for start in range(0, len(rows), per_request):
        response = client.post(f"/models/{name}/1/predict", json=rows[start:start + per_request].tolist())
        assert response.status_code == 200, response.json


def test_the_vectorised_bins_are_the_profiles_rule() -> None:
    for edges in ([0.0, 1.0, 2.0, 5.0], [3.0], [1.0, 2.0], list(np.sort(RNG.normal(size=11)))):
        values = np.concatenate([RNG.normal(size=200) * 3, edges, [edges[0] - 1, edges[-1] + 1]])
        found = number_bins(np.asarray(edges), values)
        assert found.tolist() == [profile.bin_of(edges, v) for v in values]
    assert number_bins(np.asarray([0.0, 1.0]), np.asarray([np.nan, 0.5])).tolist() == [observe.MISSING_BIN, 1]


def test_psi_and_jensen_shannon_are_the_textbook_ones() -> None:
    p, q = [0.25, 0.25, 0.5], [0.5, 0.25, 0.25]
    assert drift.psi(p, q) == pytest.approx(sum((b - a) * math.log(b / a) for a, b in zip(p, q)))
    assert drift.js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2))
    assert drift.js_distance(p, p) == 0.0 and drift.js_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    assert drift.psi([0.5, 0.5], [1.0, 0.0]) == pytest.approx(0.5 * math.log(2) + (1e-4 - 0.5) * math.log(1e-4 / 0.5))
    assert [drift.verdict(s) for s in (0.0, 0.099, 0.1, 0.249, 0.25, 3.0)] == [
        "none", "none", "moderate", "moderate", "significant", "significant"]


def test_traffic_like_the_reference_drifts_nowhere_and_a_shifted_feature_is_significant(
        watched: FlaskClient) -> None:
    _regression(watched)
    like = RNG.normal(size=(1000, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, 1.0]
    _send(watched, "linear", like)
    report = watched.get("/models/linear/versions/1/drift?window=1h").json
    assert report["verdict"] == "none", report
    assert [f["verdict"] for f in report["features"]] == ["none"] * 3
    predictions = report["predictions"]  # the reference's predictions were profiled at upload, in deciles
    assert predictions["verdict"] == "none" and predictions["samples"] == 1000 and len(predictions["bins"]) == 12
    for feature in report["features"]:
        assert feature["samples"] == 1000 and feature["psi"] < 0.1 and 0 <= feature["js_distance"] < 0.1
        assert sum(b["live"] for b in feature["bins"]) == pytest.approx(1.0)
        assert sum(b["reference"] for b in feature["bins"]) == pytest.approx(1.0)
        assert feature["missing"] == {"reference": 0.0, "live": 0.0, "change": 0.0}

    _regression(watched, "shifted")
    moved = like.copy()
    moved[:, 1] += 2 * STD[1]
    _send(watched, "shifted", moved)
    report = watched.get("/models/shifted/versions/1/drift").json
    verdicts = {f["feature"]: f["verdict"] for f in report["features"]}
    assert verdicts == {"a": "none", "b": "significant", "c": "none"}, report
    assert report["verdict"] == "significant"
    assert report["predictions"]["verdict"] == "significant"  # y = a + 2b + 3c moved with b
    b = next(f for f in report["features"] if f["feature"] == "b")
    assert b["psi"] > 1.0 and b["js_distance"] > 0.5
    assert b["bins"][-1]["bin"].startswith(">") and b["bins"][-2]["reference"] == pytest.approx(0.1, abs=0.01)
    assert b["bins"][-2]["live"] + b["bins"][-1]["live"] > 0.5  # half is now in the reference's top tenth or above


def test_below_min_samples_the_verdict_is_insufficient_with_no_score(watched: FlaskClient) -> None:
    _regression(watched)
    _send(watched, "linear", TRAIN[:99] + [0.0, 100.0, 0.0])  # far off, but 99 values only
    report = watched.get("/models/linear/versions/1/drift").json
    assert report["verdict"] == "insufficient"
    for feature in report["features"]:
        assert feature["verdict"] == "insufficient" and feature["psi"] is None and feature["js_distance"] is None
        assert feature["samples"] == 99 and "99 values" in feature["reason"]


def test_a_version_without_a_reference_says_so(watched: FlaskClient) -> None:
    report = watched.get("/models/iris/versions/1/drift").json
    assert report["verdict"] == "no reference" and report["features"] == [] and "reference" in report["message"]


def test_only_the_window_counts(watched: FlaskClient) -> None:
    _regression(watched)
    _send(watched, "linear", TRAIN[:200])
    now = dt.datetime.now(dt.UTC)
    earlier = (now - dt.timedelta(hours=3)).isoformat()
    assert watched.get("/models/linear/versions/1/drift").json["features"][0]["samples"] == 200
    old = watched.get("/models/linear/versions/1/drift", query_string={
        "since": (now - dt.timedelta(hours=5)).isoformat(), "until": earlier}).json
    assert [f["samples"] for f in old["features"]] == [0, 0, 0]
    assert watched.get("/models/linear/versions/1/drift?window=7d").json["features"][0]["samples"] == 200


@pytest.mark.parametrize("query, message", [
    ({"window": "2h"}, "window must be one of 1h, 24h, 7d"),
    ({"window": "1h", "since": "2026-01-01T00:00:00Z"}, "not both"),
    ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since must be before until"),
    ({"since": "2026-01-02T00:00:00"}, "since"),  # no zone
])
def test_bad_windows_are_422(watched: FlaskClient, query: dict[str, str], message: str) -> None:
    _regression(watched)
    response = watched.get("/models/linear/versions/1/drift", query_string=query)
    assert response.status_code == 422 and message in json.dumps(response.json), response.json


def test_a_missing_model_or_version_is_404(watched: FlaskClient) -> None:
    assert watched.get("/models/nope/versions/1/drift").status_code == 404
    assert watched.get("/models/iris/versions/9/drift").status_code == 404
    assert watched.get("/models/iris/versions/9/predictions").status_code == 404


def test_string_features_and_missing_values_of_a_dataframe_model(watched: FlaskClient) -> None:
    frame = pd.DataFrame({"city": RNG.choice(["paris", "rome", "oslo"], size=600),
                          "size": RNG.normal(size=600)})
    model = make_pipeline(
        __import__("sklearn.compose", fromlist=["make_column_transformer"]).make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), ["city"]), remainder="passthrough"),
        LogisticRegression()).fit(frame, frame["size"] > 0)
    _upload(watched, model, io.BytesIO(frame.to_csv(index=False).encode()), "shop")
    records = [{"city": "lima", "size": 0.1}] * 60 + [{"city": "paris", "size": 0.2}] * 60
    for record in records:
        assert watched.post("/models/shop/1/predict", json=record).status_code == 200
    report = watched.get("/models/shop/versions/1/drift").json
    city = next(f for f in report["features"] if f["feature"] == "city")
    shares = {b["bin"]: b["live"] for b in city["bins"]}
    assert shares == {"oslo": 0.0, "paris": 0.5, "rome": 0.0, "other": 0.5}
    assert city["verdict"] == "significant" and city["samples"] == 120


def test_a_classifiers_predicted_classes_are_compared_with_what_it_predicted_for_the_reference(
        watched: FlaskClient) -> None:
    y = (TRAIN[:, 0] > 0.5).astype(int)  # about 31% ones
    model = LogisticRegression().fit(TRAIN, y)
    _upload(watched, model, json.dumps(TRAIN.tolist()), "clf", features=json.dumps(FEATURES))
    stored = watched.get("/models/clf/versions/1").json["profile"]["predictions"]
    assert stored["kind"] == "string" and set(stored["counts"]) == {"0", "1"}
    assert sum(stored["counts"].values()) == len(TRAIN)
    _send(watched, "clf", TRAIN[:400])
    report = watched.get("/models/clf/versions/1/drift").json
    assert report["predictions"]["verdict"] == "none", report["predictions"]
    assert {b["bin"] for b in report["predictions"]["bins"]} == {"0", "1", "other"}

    _upload(watched, model, json.dumps(TRAIN.tolist()), "clf2", features=json.dumps(FEATURES))
    ones = TRAIN[TRAIN[:, 0] > 1.0][:150]  # only rows it calls 1
    _send(watched, "clf2", ones)
    report = watched.get("/models/clf2/versions/1/drift").json
    shares = {b["bin"]: b["live"] for b in report["predictions"]["bins"]}
    assert shares["1"] > 0.95 and report["predictions"]["verdict"] == "significant"


def test_a_feature_that_becomes_significant_is_one_event_and_a_webhook_and_the_gauges_say_it(
        config: dict[str, dict[str, Any]]) -> None:
    apps = [create_app({**config, "observe": {"sample_rate": 0.0, "min_samples": 100},
                        "webhooks": {"allow_private": True}}) for _ in range(2)]
    clients = [admin_client(app) for app in apps]
    hook = clients[0].post("/webhooks", json={"url": "http://127.0.0.1:9/hook",
                                              "events": ["version.drift_significant"]})
    assert hook.status_code == 201
    _regression(clients[0])
    like = RNG.normal(size=(300, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, 1.0]
    _send(clients[0], "linear", like[:150])
    _send(clients[1], "linear", like[150:])  # two processes' counts: 300 in all
    observers = [app.extensions[EXTENSION].predictor.observer for app in apps]
    for observer in observers:
        observer.flush()
    for observer in observers:
        observer.check()
    assert clients[0].get("/models/linear/events").json[0]["action"] == "version.created"  # nothing drifted
    text_metrics = clients[0].get("/metrics").get_data(as_text=True)
    assert 'modelyard_drift_samples{feature="b",model="linear",version="1"} 300.0' in text_metrics

    moved = like.copy()
    moved[:, 1] += 3 * STD[1]
    _send(clients[0], "linear", np.concatenate([moved, moved]))  # b now mostly above its reference
    _send(clients[1], "linear", np.concatenate([moved, moved]))
    for observer in observers:
        observer.flush()
    for observer in observers:  # both judge it; one records it
        observer.check()
    for observer in observers:  # and a later check of a still-drifted feature records nothing more
        _send(clients[0], "linear", moved[:10])
        observer.flush()
        observer.check()
    events = [e for e in clients[0].get("/models/linear/events").json if e["action"] == "version.drift_significant"]
    assert sorted(e["after"]["feature"] for e in events) == ["b", "prediction"], events
    b = next(e for e in events if e["after"]["feature"] == "b")
    assert b["actor"] == "drift" and b["version"] == 1 and b["after"]["psi"] > 0.25
    assert b["before"] == {"verdict": "none"}
    deliveries = clients[0].get(f"/webhooks/{hook.json['id']}/deliveries").json
    assert len(deliveries) == 2 and {d["event_type"] for d in deliveries} == {"version.drift_significant"}
    text_metrics = clients[0].get("/metrics").get_data(as_text=True)
    psi_line = next(line for line in text_metrics.splitlines()
                    if line.startswith('modelyard_drift_psi{feature="b",model="linear",version="1"}'))
    assert float(psi_line.split()[-1]) > 0.25
    for app in apps:
        app.extensions[EXTENSION].engine.dispose()


def test_the_version_page_draws_each_features_bins_and_marks_the_drifted_ones(watched: FlaskClient) -> None:
    _regression(watched)
    moved = TRAIN[:300].copy()
    moved[:, 2] += 2 * STD[2]
    _send(watched, "linear", moved)
    html = watched.get("/ui/models/linear/versions/1").get_data(as_text=True)
    assert html.count('<svg class="bins"') == 4  # three features and the predictions
    rows = {chunk.split('"', 1)[0]: chunk.split("</tr>", 1)[0] for chunk in html.split('data-feature="')[1:]}
    assert set(rows) == {"a", "b", "c", "prediction"}
    assert 'class="verdict significant"' in rows["c"] and 'class="verdict none"' in rows["a"]
    assert html.count('<tr class="drifted"') >= 1 and "12 bins" not in html
    assert "without a reference" in watched.get("/ui/models/iris/versions/1").get_data(as_text=True)
