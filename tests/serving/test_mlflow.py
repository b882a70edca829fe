"""MLflow's scoring protocol (`/invocations`) with bodies pandas itself produced, columns in
orders other than the model's, and every way a body can be wrong."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient

from modelyard.web.context import Runtime
from tests.factories import make_version

SETOSA = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}
VIRGINICA = {"sepal.length": 5.9, "sepal.width": 3.0, "petal.length": 5.1, "petal.width": 1.8}
SHUFFLED = ["petal.width", "sepal.length", "petal.length", "sepal.width"]


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame([VIRGINICA, SETOSA, VIRGINICA])[SHUFFLED]


def _post(client: FlaskClient, url: str, body: Any) -> Any:
    return client.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"})


def test_pandas_split_records_and_csv_bodies_answer_as_mlflow_does(client: FlaskClient, frame: pd.DataFrame) -> None:
    bodies = {
        "split": {"dataframe_split": json.loads(frame.to_json(orient="split"))},  # with its index, as pandas gives it
        "split dict": {"dataframe_split": frame.to_dict(orient="split")},
        "records": {"dataframe_records": frame.to_dict(orient="records")},
        "records json": {"dataframe_records": json.loads(frame.to_json(orient="records"))},
        "instances": {"instances": frame[list(SETOSA)].values.tolist()},
        "inputs": {"inputs": frame[list(SETOSA)].values.tolist()},
        "inputs as columns": {"inputs": frame.to_dict(orient="list")},
        "with params": {"dataframe_records": frame.to_dict(orient="records"), "params": {"ignored": 1}},
    }
    for label, body in bodies.items():
        response = _post(client, "/models/iris/1/invocations", body)
        assert response.status_code == 200, (label, response.json)
        assert response.json == {"predictions": [2, 0, 2]}, label
    csv = client.post("/models/iris/production/invocations", data=frame.to_csv(index=False),
                      headers={"Content-Type": "text/csv"})
    assert csv.status_code == 200 and csv.json == {"predictions": [2, 0, 2]}
    charset = client.post("/invocations", data=frame.to_csv(index=False),
                          headers={"Content-Type": "text/csv; charset=utf-8"})
    assert charset.json == {"predictions": [2, 0, 2]}  # POST /invocations: the default model's production


def test_a_model_on_a_dataframe_with_strings_reads_a_csv(client: FlaskClient, runtime: Runtime) -> None:
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    train = pd.DataFrame({"colour": ["red", "blue", "red", "green", "blue", "green"],
                          "size": [1.0, 2.0, 1.5, 3.0, 2.5, 3.5], "kind": [0, 1, 0, 1, 1, 1]})
    model = make_pipeline(make_column_transformer((OneHotEncoder(), ["colour"]), remainder="passthrough"),
                          LogisticRegression()).fit(train[["colour", "size"]], train["kind"])
    make_version(runtime, "shop", model, feature_names=["colour", "size"], labels=None)
    sent = train[["size", "colour"]]  # the other order
    response = client.post("/models/shop/1/invocations", data=sent.to_csv(index=False),
                           headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.json
    assert response.json["predictions"] == model.predict(train[["colour", "size"]]).tolist()


@pytest.mark.parametrize(("body", "fields"), [
    ({}, []),
    ({"inputs": [[1, 2, 3, 4]], "instances": [[1, 2, 3, 4]]}, ["inputs", "instances"]),
    ({"params": {}}, ["params"]),
    ({"dataframe_records": [SETOSA], "extra": 1}, ["dataframe_records", "extra"]),
    (dict(SETOSA), sorted(SETOSA)),  # a bare record: native, not MLflow
    ([list(SETOSA.values())], []),
])
def test_not_exactly_one_input_field_is_a_400_naming_them(client: FlaskClient, body: Any, fields: list[str]) -> None:
    response = _post(client, "/invocations", body)
    assert response.status_code == 400, response.json
    message = response.json["message"]
    assert "exactly one of the fields dataframe_split, dataframe_records, instances, inputs" in message
    assert response.json.get("errors", {}).get("fields", []) == fields


@pytest.mark.parametrize(("request_kwargs", "status", "words"), [
    ({"data": "sepal.length,nope\n1,2\n", "content_type": "text/csv"}, 422, "nope"),
    ({"data": "", "content_type": "text/csv"}, 400, "header row"),
    ({"data": b"\xff\xfe\x00", "content_type": "text/csv"}, 400, "CSV"),
    ({"data": "sepal.length,sepal.width,petal.length,petal.width\n1,2,x,4\n", "content_type": "text/csv"},
     422, "petal.length"),
    ({"data": "sepal.length,sepal.width,petal.length,petal.width\n1,2,inf,4\n", "content_type": "text/csv"},
     422, "petal.length"),
    ({"data": "sepal.length,sepal.width,petal.length,petal.width\n1,2,3\n", "content_type": "text/csv"}, 422, "3"),
    ({"data": "{}", "content_type": "text/plain"}, 415, "text/csv"),
    ({"data": "{nope", "content_type": "application/json"}, 400, "JSON"),
    ({"json": {"inputs": {"a": [1], "b": [1, 2]}}}, 422, "one length"),
])
def test_bad_bodies_keep_our_error_shape(client: FlaskClient, request_kwargs: dict[str, Any], status: int,
                                         words: str) -> None:
    response = client.post("/models/iris/1/invocations", **request_kwargs)
    assert response.status_code == status, response.json
    assert set(response.json) >= {"code", "status", "message"}
    assert words in response.json["message"]


def test_invocations_count_as_predictions_and_need_the_predictor_role(app: Flask, client: FlaskClient,
                                                                      anon: FlaskClient) -> None:
    body = {"inputs": [list(SETOSA.values())]}
    before = client.get("/metrics").get_data(as_text=True)
    assert _post(client, "/invocations", body).status_code == 200
    after = client.get("/metrics").get_data(as_text=True)
    line = 'modelyard_predict_requests_total{model="iris",status="200",version="1"}'
    assert _count(after, line) - _count(before, line) == 1
    assert _post(anon, "/invocations", body).status_code == 200  # the anonymous role predicts by default
    reader = client.post("/tokens", json={"name": "r", "role": "reader"}).json["token"]
    refused = anon.post("/invocations", json=body, headers={"Authorization": f"Bearer {reader}"})
    assert refused.status_code == 403 and refused.json["code"] == 403


def _count(text: str, line: str) -> float:
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return 0.0
