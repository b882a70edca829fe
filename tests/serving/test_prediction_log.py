"""The sampled prediction log (issue 26, part 2): which requests are logged (by X-Request-Key's hash,
else at random), what a logged request keeps, the private read that pages through it, retention
(whole days on PostgreSQL), and a log that never fails or slows a prediction. Both backends."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from flask import Flask
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sqlalchemy import func, select, text

from modelyard.app import create_app
from modelyard.observe_export import FIXED
from modelyard.registry import observe
from modelyard.registry.observe_tables import DriftCount, LoggedPrediction
from modelyard.serving.observe import sampled
from modelyard.web.context import EXTENSION
from tests.conftest import admin_client

IRIS = [5.1, 3.5, 1.4, 0.2]
MODELYARD = str(Path(sys.executable).parent / "modelyard")


def _app(config: dict[str, dict[str, Any]], **observe_settings: Any) -> Flask:
    return create_app({**config, "observe": observe_settings})


@pytest.fixture
def logged(config: dict[str, dict[str, Any]]) -> Any:
    app = _app(config, sample_rate=1.0, logged_rows=3)
    yield app
    app.extensions[EXTENSION].engine.dispose()


def _count(app: Flask) -> int:
    with app.extensions[EXTENSION].sessions() as session:
        return int(session.scalar(select(func.count()).select_from(LoggedPrediction)) or 0)


def test_a_logged_request_keeps_its_first_rows_outputs_version_alias_key_and_latency(logged: Flask) -> None:
    client = admin_client(logged)
    rows = [IRIS, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.5, 5.0, 1.9]]
    answer = client.post("/models/iris/production/predict", json=rows, headers={"X-Request-Key": "k-1"})
    assert answer.status_code == 200
    assert client.post("/models/iris/1/predict", json={"sepal.length": 5.1, "sepal.width": 3.5,
                                                      "petal.length": 1.4, "petal.width": 0.2}).status_code == 200
    page = client.get("/models/iris/versions/1/predictions")
    assert page.status_code == 200, page.json
    newest, first = page.json
    assert first["n_rows"] == 4 and first["rows"] == rows[:3] and first["outputs"] == [0, 2, 1]
    assert first["alias"] == "production" and first["request_key"] == "k-1" and first["version"] == 1
    assert first["latency_ms"] > 0 and first["model"] == "iris"
    assert newest["n_rows"] == 1 and newest["rows"] == [IRIS] and newest["alias"] is None
    assert json.loads(page.headers["X-Pagination"])["total"] == 2


def test_the_log_pages_by_number_and_by_cursor_newest_first(logged: Flask) -> None:
    client = admin_client(logged)
    for i in range(7):
        client.post("/models/iris/1/predict", json=[IRIS], headers={"X-Request-Key": f"k{i}"})
    by_cursor, cursor = [], None
    while True:
        query = {"page_size": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/models/iris/versions/1/predictions", query_string=query)
        by_cursor += [item["request_key"] for item in page.json]
        cursor = json.loads(page.headers["X-Pagination"]).get("next_cursor")
        if cursor is None:
            break
    assert by_cursor == [f"k{i}" for i in reversed(range(7))]
    second = client.get("/models/iris/versions/1/predictions", query_string={"page": 2, "page_size": 3}).json
    assert [item["request_key"] for item in second] == ["k3", "k2", "k1"]
    now = dt.datetime.now(dt.UTC)
    assert client.get("/models/iris/versions/1/predictions", query_string={
        "until": (now - dt.timedelta(hours=1)).isoformat()}).json == []
    bad = client.get("/models/iris/versions/1/predictions", query_string={"cursor": "bm9wZQ"})
    assert bad.status_code == 422


def test_the_log_is_a_private_read(logged: Flask) -> None:
    anon = logged.test_client()
    assert anon.post("/models/iris/1/predict", json=[IRIS]).status_code == 200
    refused = anon.get("/models/iris/versions/1/predictions")
    assert refused.status_code == 401 and "prediction log" in refused.json["message"]
    reader = admin_client(logged).post("/tokens", json={"name": "r", "role": "reader"}).json["token"]
    answer = anon.get("/models/iris/versions/1/predictions", headers={"Authorization": f"Bearer {reader}"})
    assert answer.status_code == 200 and len(answer.json) == 1
    assert anon.get("/models/iris/versions/1/drift").status_code == 200  # drift holds no inputs: metadata


def test_a_key_is_logged_every_time_or_never_and_the_rate_holds() -> None:
    keys = [f"user-{i}" for i in range(20_000)]
    chosen = [k for k in keys if sampled(0.05, k)]
    assert 0.04 < len(chosen) / len(keys) < 0.06
    assert all(sampled(0.05, k) for k in chosen[:100]) and sampled(1.0, "x") and not sampled(0.0, "x")


def test_sampling_at_the_configured_rate(config: dict[str, dict[str, Any]]) -> None:
    app = _app(config, sample_rate=0.1)
    client = admin_client(app)
    keys = [f"key-{i}" for i in range(400)]
    for key in keys:
        client.post("/models/iris/1/predict", json=[IRIS], headers={"X-Request-Key": key})
    app.extensions[EXTENSION].predictor.flush_counts()
    assert _count(app) == sum(sampled(0.1, k) for k in keys)
    app.extensions[EXTENSION].engine.dispose()

    off = _app(config, sample_rate=0.0)
    client = admin_client(off)
    for _ in range(50):
        client.post("/models/iris/1/predict", json=[IRIS])
    off.extensions[EXTENSION].predictor.flush_counts()
    assert _count(off) == sum(sampled(0.1, k) for k in keys)  # nothing more
    off.extensions[EXTENSION].engine.dispose()


def test_refused_requests_are_not_logged(logged: Flask) -> None:
    client = admin_client(logged)
    assert client.post("/models/iris/1/predict", json=[[1, 2]]).status_code == 422
    assert client.get("/models/iris/versions/1/predictions").json == []


def test_a_registry_out_of_reach_loses_the_flush_not_the_answer(logged: Flask, caplog: Any) -> None:
    client = admin_client(logged)
    runtime = logged.extensions[EXTENSION]
    observer = runtime.predictor.observer
    assert client.post("/models/iris/1/predict", json=[IRIS]).status_code == 200
    broken = observer._sessions
    observer._sessions = lambda: (_ for _ in ()).throw(RuntimeError("no database"))  # type: ignore[assignment]
    with pytest.raises(RuntimeError):
        observer.flush()  # the session could not even be opened: the caller (the thread) logs it
    observer._sessions = broken
    assert client.post("/models/iris/1/predict", json=[IRIS]).status_code == 200
    assert len(client.get("/models/iris/versions/1/predictions").json) == 1  # the first flush was lost


def test_a_deleted_version_takes_its_log_and_counts_with_it(config: dict[str, dict[str, Any]]) -> None:
    app = _app(config, sample_rate=1.0)
    client = admin_client(app)
    X = np.random.default_rng(0).normal(size=(300, 2))
    model = LinearRegression().fit(X, X @ [1.0, 2.0])
    response = client.post("/models/lin/versions", data={
        "file": (io.BytesIO(pickle.dumps(model)), "m.pkl"), "reference": json.dumps(X.tolist())},
        content_type="multipart/form-data")
    assert response.status_code == 201, response.json
    assert client.post("/models/lin/1/predict", json=X[:5].tolist()).status_code == 200
    assert len(client.get("/models/lin/versions/1/predictions").json) == 1
    runtime = app.extensions[EXTENSION]
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(DriftCount)) > 0
    assert client.post("/models/lin/1/predict", json=X[:5].tolist()).status_code == 200  # pending, not flushed
    assert client.delete("/models/lin/versions/1").status_code == 204
    runtime.predictor.flush_counts()  # its pending rows are skipped: the version is gone
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(DriftCount)) == 0
        assert session.scalar(select(func.count()).select_from(LoggedPrediction)) == 0
    app.extensions[EXTENSION].engine.dispose()


def test_retention_drops_old_days(logged: Flask) -> None:
    client = admin_client(logged)
    runtime = logged.extensions[EXTENSION]
    now = dt.datetime.now(dt.UTC)
    with runtime.sessions() as session:
        version_id = session.scalar(text("SELECT id FROM model_versions"))
        old = [observe.Logged(version_id, now - dt.timedelta(days=days), None, None, 1, [IRIS], [0], 1.0)
               for days in (40, 31, 29)]
        observe.append(session, old, {(version_id, observe.bucket_of(now - dt.timedelta(days=40)), False, "a", 1): 5,
                                      (version_id, observe.bucket_of(now), False, "a", 1): 7})
    assert client.post("/models/iris/1/predict", json=[IRIS]).status_code == 200
    runtime.predictor.flush_counts()
    assert _count(logged) == 4
    with runtime.sessions() as session:
        observe.prune(session, 30)
        kept = sorted(round((now - at) / dt.timedelta(days=1)) for at in session.scalars(select(LoggedPrediction.at)))
        assert kept == [0, 29]
        assert list(session.scalars(select(DriftCount.count))) == [7]
        if session.get_bind().dialect.name == "postgresql":  # whole days: the partitions themselves are gone
            days = session.scalars(text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                        "JOIN pg_class p ON p.oid = i.inhparent "
                                        "WHERE p.relname = 'prediction_log'")).all()
            assert f"prediction_log_p{(now - dt.timedelta(days=40)):%Y%m%d}" not in days
            assert f"prediction_log_p{now:%Y%m%d}" in days


def _export(config: dict[str, dict[str, Any]], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env["MODELYARD_DATABASE_URL"] = config["database"]["url"]
    return subprocess.run([MODELYARD, "observe", "export", *args], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_the_export_command_writes_a_line_per_logged_row_with_a_column_per_feature(
        logged: Flask, config: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    client = admin_client(logged)
    frame = pd.DataFrame({"city": ["paris", "rome", "oslo", "rome"] * 50, "size": np.linspace(-1, 1, 200)})
    shop = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["city"]),
                                                 remainder="passthrough"),
                         LogisticRegression()).fit(frame, np.where(frame["size"] > 0, "big", "small"))
    assert client.post("/models/shop/versions", data={"file": (io.BytesIO(pickle.dumps(shop)), "m.pkl")},
                       content_type="multipart/form-data").status_code == 201
    assert client.post("/models/iris/1/predict", json=[IRIS, [6.7, 3.0, 5.2, 2.3]],
                       headers={"X-Request-Key": "two"}).status_code == 200
    assert client.post("/models/shop/1/predict", json={"city": "rome", "size": 0.5}).status_code == 200
    logged.extensions[EXTENSION].predictor.flush_counts()

    result = _export(config, "--to", str(tmp_path / "log.csv"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote 3 logged rows to {tmp_path / 'log.csv'}"
    lines = list(csv.DictReader((tmp_path / "log.csv").open()))
    iris = [line for line in lines if line["model"] == "iris"]
    assert [line["row"] for line in iris] == ["0", "1"] and {line["request_key"] for line in iris} == {"two"}
    assert iris[1]["petal.length"] == "5.2" and iris[1]["output"] == "2" and iris[0]["city"] == ""
    shop_line = next(line for line in lines if line["model"] == "shop")
    assert shop_line["city"] == "rome" and shop_line["size"] == "0.5" and shop_line["output"] == "big"

    result = _export(config, "--to", str(tmp_path / "log.parquet"), "--model", "iris", "--since", "2000-01-01")
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "log.parquet").to_pandas()
    assert list(table.columns) == [*FIXED, "sepal.length", "sepal.width", "petal.length", "petal.width", "output"]
    assert table["petal.length"].tolist() == [1.4, 5.2] and table["output"].tolist() == [0.0, 2.0]
    later = _export(config, "--to", str(tmp_path / "none.csv"), "--since", "2999-01-01")
    assert later.returncode == 0 and later.stdout.startswith("wrote 0 logged rows")
    assert (tmp_path / "none.csv").read_text().startswith("at,model,version")
    refused = _export(config, "--to", str(tmp_path / "log.json"))
    assert refused.returncode == 2 and "--to must name a .csv or .parquet file" in refused.stderr


def test_the_registrys_own_predictions_are_not_traffic(logged: Flask) -> None:
    runtime = logged.extensions[EXTENSION]
    with logged.app_context():
        assert runtime.predictor.predictions(runtime.sessions, "iris", "1", [IRIS]) == [0]  # a replay, the UI's compare
    runtime.predictor.flush_counts()
    assert _count(logged) == 0
