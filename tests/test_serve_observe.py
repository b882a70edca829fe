"""The prediction log, drift and explanations on real servers: two `modelyard serve` processes (two
workers each) on one PostgreSQL. Their drift counts add up; traffic drawn from the reference
drifts nowhere and a shifted feature is significant; a linear model's and a forest's explanations
add up (the forest's as shap says); and a server killed with SIGKILL loses at most what it had
not flushed."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shap
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression

from tests.serve_helpers import children_of, running_server, upload
from tests.test_serve_cluster import call

pytestmark = pytest.mark.slow

RNG = np.random.default_rng(11)
FEATURES = ["a", "b", "c"]
TRAIN = RNG.normal(size=(3000, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, 1.0]
SETTINGS = {"MODELYARD_ARTIFACTS_STORE": "database", "MODELYARD_OBSERVE_SAMPLE_RATE": "1.0",
            "MODELYARD_OBSERVE_FLUSH_SECONDS": "0.5"}


def _predict(server: dict[str, Any], name: str, row: list[float], key: str | None = None) -> None:
    headers = json.dumps([row]).encode()
    path = f"/models/{name}/1/predict"
    if key is None:
        status, answer = call(server, "POST", path, headers)
    else:
        import urllib.request

        request = urllib.request.Request(f"{server['base']}{path}", data=headers, method="POST", headers={
            "Content-Type": "application/json", "X-Request-Key": key, "Authorization": f"Bearer {server['token']}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            status, answer = response.status, json.loads(response.read())
    assert status == 200, answer


def _wait_for(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


def test_two_servers_counts_add_up_and_a_killed_server_keeps_what_it_flushed(tmp_path: Path, pg_url: str) -> None:
    model = pickle.dumps(LinearRegression().fit(TRAIN, TRAIN @ [1.0, 2.0, 3.0]))
    for side in "ab":
        (tmp_path / side).mkdir()
    token_file = str(tmp_path / "a" / "admin.token")
    with running_server(tmp_path / "a", database_url=pg_url, **SETTINGS) as a, \
            running_server(tmp_path / "b", database_url=pg_url, **SETTINGS,
                           MODELYARD_AUTH_ADMIN_TOKEN_FILE=token_file) as b:
        b["token"] = a["token"]
        for name in ("steady", "shifted"):
            upload(a["base"], a["token"], name, model, features=json.dumps(FEATURES),
                   reference=json.dumps(TRAIN.tolist()))
        like = RNG.normal(size=(600, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, 1.0]
        moved = like.copy()
        moved[:, 0] += 2.0  # two standard deviations of feature a
        for i in range(300):  # each server gets half; each of its workers some of that
            _predict(a if i % 2 else b, "steady", like[i].tolist())
            _predict(b if i % 2 else a, "shifted", moved[i].tolist())

        def counted() -> Any:
            report = call(a, "GET", "/models/steady/versions/1/drift")[1]
            return report if all(f["samples"] == 300 for f in report["features"]) else None

        report = _wait_for(counted)
        assert report, call(a, "GET", "/models/steady/versions/1/drift")[1]
        assert report["verdict"] == "none" and report["predictions"]["samples"] == 300
        assert [f["verdict"] for f in report["features"]] == ["none"] * 3
        shifted = call(b, "GET", "/models/shifted/versions/1/drift")[1]
        assert {f["feature"]: f["verdict"] for f in shifted["features"]} == {
            "a": "significant", "b": "none", "c": "none"}, shifted
        assert [f["samples"] for f in shifted["features"]] == [300] * 3

        # Explanations on the real servers: a linear regression and a random forest uploaded with
        # the reference add up to their predictions, and the forest's match shap's.
        forest = RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0).fit(TRAIN, TRAIN @ [1.0, 2.0, 3.0])
        upload(a["base"], a["token"], "forest", pickle.dumps(forest), features=json.dumps(FEATURES),
               reference=json.dumps(TRAIN.tolist()))
        rows = like[:5].tolist()
        expected = shap.TreeExplainer(forest, feature_perturbation="tree_path_dependent").shap_values(like[:5])
        for name, server in (("steady", a), ("forest", b)):
            status, answer = call(server, "POST", f"/models/{name}/1/predict?explain=true", json.dumps(rows).encode())
            assert status == 200, answer
            for i, (item, predicted) in enumerate(zip(answer["explanations"], answer["predictions"], strict=True)):
                total = item["base_value"] + math.fsum(item["contributions"].values())
                assert math.isclose(total, predicted, rel_tol=1e-9, abs_tol=1e-9), (name, item, predicted)
                if name == "forest":
                    assert [item["contributions"][f] for f in FEATURES] == pytest.approx(expected[i], abs=1e-6)

        # Flushed requests outlive a SIGKILL; the ones after the last flush may not.
        for i in range(40):
            _predict(a, "steady", like[300 + i].tolist(), key=f"before-{i}")
        time.sleep(1.5)  # three flushes
        for i in range(20):
            _predict(a, "steady", like[340 + i].tolist(), key=f"after-{i}")
        for pid in [pid for pid, _ in children_of(a["master"])] + [a["master"]]:
            os.kill(pid, signal.SIGKILL)
        logged = []
        for number in range(1, 5):
            status, page = call(b, "GET", f"/models/steady/versions/1/predictions?page_size=100&page={number}")
            assert status == 200, page
            logged += page
        keys = {item["request_key"] for item in logged if item["request_key"]}
        assert {f"before-{i}" for i in range(40)} <= keys, sorted(keys)
        assert 340 <= len(logged) <= 360 and all(item["rows"] and item["outputs"] for item in logged)
