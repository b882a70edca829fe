"""modelyard.client against the app itself (httpx's WSGI transport, both backends): the notebook
path (fit on a DataFrame, upload, predict with shuffled columns, promote, roll back, list,
download) and every error family. The CLI over a real server: tests/test_cli_client.py."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from flask import Flask
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelyard import client as modelyard_client
from modelyard.app import create_app
from modelyard.client import Client, ClientError, Conflict, Forbidden, InvalidInput, NotFound, TooLarge, Unauthorized
from modelyard.registry import errors as domain
from modelyard.registry import service
from modelyard.web.context import EXTENSION


def _client(app: Flask, token: str | None = "admin") -> Client:
    if token == "admin":
        token = Path(app.extensions[EXTENSION].settings.auth.admin_token_file).read_text().strip()
    return Client("http://modelyard.test", token=token, transport=httpx.WSGITransport(app=app))


@pytest.fixture
def frame() -> tuple[pd.DataFrame, Any]:
    iris = load_iris(as_frame=True)
    return iris.data, iris.target


@pytest.fixture
def api(app: Flask) -> Client:
    return _client(app)


def test_fit_upload_predict_promote_rollback_download(api: Client, frame: tuple[pd.DataFrame, Any],
                                                     tmp_path: Path) -> None:
    X, y = frame
    model = LogisticRegression(max_iter=1000).fit(X, y)
    first = api.upload(model, "churn", description="first", metrics={"accuracy": 0.97}, params={"C": 1.0},
                       tags={"team": "growth"}, labels=["setosa", "versicolor", "virginica"], example=X.head(3))
    assert first["version"] == 1 and first["format"] == "skops"
    assert first["feature_names"] == list(X.columns) and first["metadata"]["metrics"] == {"accuracy": 0.97}
    assert first["example"] == X.head(3).to_dict(orient="records")
    shuffled = X.sample(frac=1, axis=1, random_state=0).head(5)
    answer = api.predict("churn", "1", shuffled, proba=True)
    assert answer["predictions"] == model.predict(X.head(5)).tolist()
    assert answer["class_labels"] == ["setosa", "versicolor", "virginica"]
    assert api.predict("churn", 1, X.head(2).to_numpy())["predictions"] == model.predict(X.head(2)).tolist()
    assert api.predict("churn", "latest", X.head(1).to_dict(orient="records"))["predictions"] == [0]
    second = api.upload(LogisticRegression(max_iter=1000, C=0.1).fit(X, y), "churn", format="joblib")
    assert second["version"] == 2 and second["format"] == "joblib"
    assert api.promote("churn", 1) == {"alias": "production", "version": 1, "previous_version": None}
    assert api.promote("churn", 2)["previous_version"] == 1
    assert api.predict("churn", X=X.head(1))["version"] == 2  # ref defaults to production
    assert api.rollback("churn") == {"alias": "production", "version": 1, "previous_version": 2}
    api.set_alias("churn", "staging", 2)
    assert api.get_model("churn")["aliases"] == {"production": 1, "staging": 2}
    api.delete_alias("churn", "staging")
    assert [v["version"] for v in api.versions("churn")] == [2, 1]
    assert api.get_version("churn", "production")["version"] == 1
    saved = api.download("churn", 2, tmp_path / "churn-v2.joblib")
    on_disk = hashlib.sha256((tmp_path / "churn-v2.joblib").read_bytes()).hexdigest()
    assert saved["sha256"] == second["sha256"] == on_disk
    actions = [e["action"] for e in api.events("churn")]
    assert actions[:3] == ["alias.removed", "alias.set", "alias.rolled_back"] and actions[-1] == "model.created"
    path = tmp_path / "model.pkl"
    path.write_bytes(__import__("pickle").dumps(model))
    sent: list[tuple[int, int]] = []
    third = api.upload(path, "churn", progress=lambda done, total: sent.append((done, total)))
    assert third["format"] == "pickle" and sent[-1] == (path.stat().st_size, path.stat().st_size)
    api.delete_version("churn", 3)
    api.delete_alias("churn", "production")
    api.delete_model("churn")
    assert [m["name"] for m in api.list_models()] == ["iris"]


def test_lists_come_whole_across_pages_and_filter(app: Flask, api: Client) -> None:
    runtime = app.extensions[EXTENSION]
    with runtime.sessions() as session:
        for i in range(130):
            service.create_model(session, f"m-{i:03d}", tags={"team": "a" if i % 2 else "b"})
    everything = api.list_models()
    assert len(everything) == 131 and [m["name"] for m in everything] == sorted(m["name"] for m in everything)
    assert len(api.list_models(tag="team:a")) == 65
    assert [m["name"] for m in api.list_models(q="M-12")] == [f"m-{i}" for i in range(120, 130)]


def test_every_error_family(app: Flask, api: Client, config: dict[str, dict[str, Any]],
                            frame: tuple[pd.DataFrame, Any]) -> None:
    X, y = frame
    with pytest.raises(NotFound, match="model 'nope' not found") as missing:
        api.get_model("nope")
    assert missing.value.status == 404 and isinstance(missing.value, domain.NotFound)
    with pytest.raises(InvalidInput) as invalid:
        api.predict("iris", 1, [{"sepal.length": 1}])
    assert invalid.value.status == 422 and "missing" in invalid.value.message
    with pytest.raises(Conflict):
        api.delete_version("iris", 1)  # production points at it
    with pytest.raises(Unauthorized):
        _client(app, token="myd_nope").list_models()
    reader = api._json("POST", "/tokens", json={"name": "r", "role": "reader"})["token"]
    with pytest.raises(Forbidden) as forbidden:
        _client(app, token=reader).upload(LogisticRegression(max_iter=1000).fit(X, y), "x")
    assert forbidden.value.status == 403
    small = create_app({**config, "upload": {"max_bytes": 1000}})
    try:
        with pytest.raises(TooLarge, match="limit"):
            _client(small).upload(LogisticRegression(max_iter=1000).fit(X, y), "big")
    finally:
        small.extensions[EXTENSION].engine.dispose()
    with pytest.raises(ValueError, match="format must be one of"):
        api.upload(object(), "x", format="onnx")


def test_an_unreachable_server_is_a_client_error() -> None:
    with Client("http://127.0.0.1:9", timeout=2) as unreachable:
        with pytest.raises(ClientError, match="could not reach the modelyard server at http://127.0.0.1:9") as caught:
            unreachable.list_models()
    assert caught.value.status is None


def test_url_and_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_URL", "http://example.invalid:1234/")
    monkeypatch.setenv("MODELYARD_TOKEN", "myd_secret")
    client = Client()
    assert client.url == "http://example.invalid:1234"
    assert client._http.headers["Authorization"] == "Bearer myd_secret"
    assert Client(token="")._http.headers.get("Authorization") is None  # an explicit empty token wins


def test_the_client_imports_neither_flask_nor_sqlalchemy_nor_the_science() -> None:
    code = ("import sys, modelyard.client; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'flask', 'sqlalchemy', 'werkzeug', 'numpy', "
            "'pandas', 'sklearn', 'skops'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONWARNINGS": "error"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert modelyard_client.__doc__ and "Flask" in modelyard_client.__doc__


def test_weights_and_alias_history(api: Client, frame: tuple[pd.DataFrame, Any]) -> None:
    X, y = frame
    for c in (1.0, 0.01):
        api.upload(LogisticRegression(C=c, max_iter=1000).fit(X, y), "canary")
    api.promote("canary", 1)
    moved = api.set_weights("canary", "production", {1: 80, 2: 20})
    assert moved["weights"] == {"1": 80, "2": 20} and moved["previous_version"] == 1
    assert api.aliases("canary") == {"production": {"weights": {"1": 80, "2": 20}}}
    with pytest.raises(InvalidInput, match="at least one weight must be above 0"):
        api.set_weights("canary", "production", {1: 0})
    states = api.alias_history("canary", "production")
    assert [s.get("weights") or s.get("version") for s in states] == [{"1": 80, "2": 20}, 1]
    then = api.alias_history("canary", "production", at=states[1]["since"])
    assert then == {"alias": "production", "at": states[1]["since"], "version": 1}
    with pytest.raises(NotFound, match="had no alias 'production'"):
        api.alias_history("canary", "production", at="2000-01-01T00:00:00Z")


def test_shadows(api: Client, frame: tuple[pd.DataFrame, Any]) -> None:
    X, y = frame
    for c in (1.0, 1.0):
        api.upload(LogisticRegression(C=c, max_iter=1000).fit(X, y), "shadowed")
    api.promote("shadowed", 1)
    assert api.set_shadow("shadowed", "production", 2, 1.0)["version"] == 2
    api.predict("shadowed", "production", X.head(4))
    report = api.shadow_report("shadowed")
    assert (report["requests"], report["compared"], report["agreement"]) == (1, 1, 1.0)
    api.delete_shadow("shadowed")
    with pytest.raises(NotFound, match="has no shadow"):
        api.shadow_report("shadowed")
