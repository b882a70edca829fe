"""The Open Inference Protocol V2 through the HTTP test client: inputs by feature, every datatype,
binary tensors built by hand, the protocol's {"error"} shape on every way a request can fail,
and the lane answering as Flask's views do. (tritonclient itself: tests/test_serve_v2.py.)"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient

from modelyard.app import create_app
from modelyard.web.context import EXTENSION, Runtime
from tests.factories import make_version
from tests.serving.test_lane import _token, flask_only

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [5.9, 3.0, 5.1, 1.8]
FEATURES = ["sepal.length", "sepal.width", "petal.length", "petal.width"]


def _tensor(name: str, shape: list[int], datatype: str, data: Any) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def _infer(client: FlaskClient, body: Any, url: str = "/v2/models/iris/infer", **kwargs: Any) -> Any:
    return client.post(url, data=json.dumps(body) if not isinstance(body, bytes) else body, **kwargs)


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "INT32", "INT64", "UINT8"])
def test_one_2d_input_of_any_number_type(client: FlaskClient, datatype: str) -> None:
    rows = [[5, 3, 1, 0], [6, 3, 5, 2]]
    response = _infer(client, {"inputs": [_tensor("x", [2, 4], datatype, rows)]})
    assert response.status_code == 200, response.json
    assert response.json["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 2]}]


def test_one_1d_input_per_feature_in_any_order_and_by_alias(client: FlaskClient) -> None:
    columns = dict(zip(FEATURES, zip(SETOSA, VIRGINICA, strict=True), strict=True))
    inputs = [_tensor(name, [2], "FP64", list(columns[name])) for name in reversed(FEATURES)]
    inputs[0]["name"] = "petal.width"
    inputs[1]["name"] = "petal.lenght"  # the tutorial's misspelling, a declared alias of iris
    response = _infer(client, {"inputs": inputs})
    assert response.status_code == 200, response.json
    assert response.json["outputs"][0]["data"] == [0, 2]
    nested = _infer(client, {"inputs": [_tensor("input", [2, 4], "FP64", [SETOSA, VIRGINICA])]})
    assert nested.json["outputs"][0]["data"] == [0, 2]  # data nested as the shape, not flat
    one_row = _infer(client, {"inputs": [_tensor("input", [4], "FP64", SETOSA)]})
    assert one_row.json["outputs"][0]["data"] == [0]


def test_binary_tensors_both_ways(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers")
    rows = np.array([SETOSA, VIRGINICA], dtype="<f4")
    header = json.dumps({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": rows.nbytes}}],
                         "outputs": [{"name": "predict_proba", "parameters": {"binary_data": True}},
                                     {"name": "predict"}]}).encode()
    response = client.post("/v2/models/flowers/versions/1/infer", data=header + rows.tobytes(),
                           headers={"Inference-Header-Content-Length": str(len(header)),
                                    "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.get_data()
    size = int(response.headers["Inference-Header-Content-Length"])
    body = response.get_data()
    reply = json.loads(body[:size])
    proba, predict = reply["outputs"]
    assert predict == {"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 2]}
    assert proba["parameters"]["binary_data_size"] == 2 * 3 * 8 and "data" not in proba
    values = np.frombuffer(body[size:], dtype="<f8").reshape(2, 3)
    assert np.allclose(values.sum(axis=1), 1.0) and values[1].argmax() == 2


def test_bytes_and_bool_tensors(client: FlaskClient, runtime: Runtime) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts, kinds = ["good great", "awful bad", "great fun", "bad sad"], ["pos", "neg", "pos", "neg"]
    make_version(runtime, "reviews", make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, kinds),
                 feature_names=["text"], labels=None)
    metadata = client.get("/v2/models/reviews/versions/1").json
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"][0] == {"name": "predict", "datatype": "BYTES", "shape": [-1]}
    answer = _infer(client, {"inputs": [_tensor("text", [2], "BYTES", ["great great", "sad bad"])]},
                    "/v2/models/reviews/versions/1/infer")
    assert answer.json["outputs"][0] == {"name": "predict", "datatype": "BYTES", "shape": [2], "data": ["pos", "neg"]}
    strings = [s.encode() for s in ("great great", "sad bad")]
    blob = b"".join(struct.pack("<I", len(s)) + s for s in strings)
    header = json.dumps({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(blob)}}]}).encode()
    binary = client.post("/v2/models/reviews/versions/1/infer", data=header + blob,
                         headers={"Inference-Header-Content-Length": str(len(header))})
    assert binary.json["outputs"][0]["data"] == ["pos", "neg"]
    flags = _infer(client, {"inputs": [_tensor("input", [1, 4], "BOOL", [True, False, True, True])]})
    assert flags.status_code == 200, flags.json


def test_a_dataframe_model_takes_one_input_per_column(client: FlaskClient, runtime: Runtime) -> None:
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    train = pd.DataFrame({"colour": ["red", "blue", "red", "green"], "size": [1.0, 2.0, 1.5, 3.0],
                          "kind": [0, 1, 0, 1]})
    model = make_pipeline(make_column_transformer((OneHotEncoder(), ["colour"]), remainder="passthrough"),
                          LogisticRegression()).fit(train[["colour", "size"]], train["kind"])
    make_version(runtime, "shop", model, feature_names=["colour", "size"], labels=None)
    metadata = client.get("/v2/models/shop/versions/1").json
    assert metadata["inputs"] == [{"name": "colour", "datatype": "BYTES", "shape": [-1]},
                                  {"name": "size", "datatype": "FP64", "shape": [-1]}]
    answer = _infer(client, {"inputs": [_tensor("size", [4], "FP64", train["size"].tolist()),
                                        _tensor("colour", [4, 1], "BYTES", [[c] for c in train["colour"]])]},
                    "/v2/models/shop/versions/1/infer")
    assert answer.status_code == 200, answer.json
    assert answer.json["outputs"][0]["data"] == model.predict(train[["colour", "size"]]).tolist()


def test_a_model_without_production_answers_for_its_latest_version(client: FlaskClient, runtime: Runtime) -> None:
    """No version in a V2 path: the production alias when the model has one, else its latest version."""
    from sklearn.tree import DecisionTreeClassifier

    from tests.factories import X, y

    make_version(runtime, "flowers")
    make_version(runtime, "flowers", DecisionTreeClassifier(max_depth=1, random_state=0).fit(X, y), labels=None)
    good = {"inputs": [_tensor("input", [2, 4], "FP64", [SETOSA, VIRGINICA])]}
    for where in ("lane", "flask"):
        with flask_only(client.application) if where == "flask" else _nothing():
            assert client.get("/v2/models/flowers").json["versions"] == ["1", "2"]
            assert [o["name"] for o in client.get("/v2/models/flowers").json["outputs"]] == ["predict",
                                                                                               "predict_proba"]
            assert client.get("/v2/models/flowers/ready").json == {"name": "flowers", "version": "2", "ready": True}
            answer = _infer(client, good, "/v2/models/flowers/infer")
            assert answer.status_code == 200, (where, answer.json)
            assert answer.json["model_version"] == "2" and answer.headers["Content-Type"] == "application/json"
    client.post("/models/flowers/versions/1/promote", json={"alias": "production"})
    assert _infer(client, good, "/v2/models/flowers/infer").json["model_version"] == "1"
    assert client.get("/v2/models/flowers/ready").json["version"] == "1"
    client.delete("/models/flowers/aliases/production")
    assert _infer(client, good, "/v2/models/flowers/infer").json["model_version"] == "2"
    client.post("/models", json={"name": "empty"})
    for response in (_infer(client, good, "/v2/models/empty/infer"), client.get("/v2/models/empty"),
                     client.get("/v2/models/empty/ready")):
        assert response.status_code == 404
        assert response.json == {"error": "model 'empty' has no versions yet: upload one first"}


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def _bad(app: Flask) -> list[tuple[str, str, dict[str, Any], int, str]]:
    good = {"inputs": [_tensor("input", [1, 4], "FP64", SETOSA)]}
    reader = _token(app, "reader")
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64",
                                     "parameters": {"binary_data_size": 32}}]}).encode()
    nan = header + np.array([[1.0, np.nan, 2.0, 3.0]]).tobytes()
    return [
        ("unknown model", "/v2/models/nope/infer", {"json": good}, 404, "model 'nope' not found"),
        ("unknown version", "/v2/models/iris/versions/7/infer", {"json": good}, 404, "no version or alias '7'"),
        ("not JSON", "/v2/models/iris/infer", {"data": "{x"}, 400, "JSON"),
        ("wrong type", "/v2/models/iris/infer", {"data": "{}", "content_type": "text/plain"}, 415, "text/plain"),
        ("no inputs", "/v2/models/iris/infer", {"json": {"inputs": []}}, 422, "non-empty list of inputs"),
        ("bad datatype", "/v2/models/iris/infer", {"json": {"inputs": [_tensor("input", [1, 4], "FP8", SETOSA)]}},
         422, "unknown datatype 'FP8'"),
        ("bad shape", "/v2/models/iris/infer", {"json": {"inputs": [_tensor("input", [2, 4], "FP64", SETOSA)]}},
         422, "shape [2, 4] holds 8 values; its data has 4"),
        ("negative shape", "/v2/models/iris/infer", {"json": {"inputs": [_tensor("input", [-1, 4], "FP64", SETOSA)]}},
         422, "non-negative"),
        ("strings for numbers", "/v2/models/iris/infer",
         {"json": {"inputs": [_tensor("input", [1, 4], "FP64", ["a", "b", "c", "d"])]}}, 422, "not FP64"),
        ("3-D", "/v2/models/iris/infer", {"json": {"inputs": [_tensor("input", [1, 1, 4], "FP64", SETOSA)]}},
         422, "must be 2-D"),
        ("unknown feature", "/v2/models/iris/infer",
         {"json": {"inputs": [_tensor("width", [1], "FP64", [1.0]), _tensor("height", [1], "FP64", [1.0])]}},
         422, "width"),
        ("unknown output", "/v2/models/iris/infer", {"json": {**good, "outputs": [{"name": "x"}]}}, 422,
         "unknown output 'x'"),
        ("header past the body", "/v2/models/iris/infer",
         {"data": b"{}", "headers": {"Inference-Header-Content-Length": "99"}}, 400, "does not fit"),
        ("binary past the body", "/v2/models/iris/infer",
         {"data": header + b"\x00" * 8, "headers": {"Inference-Header-Content-Length": str(len(header))}},
         400, "runs past the body"),
        ("bytes left over", "/v2/models/iris/infer",
         {"data": header + b"\x00" * 40, "headers": {"Inference-Header-Content-Length": str(len(header))}},
         400, "after the tensors"),
        ("NaN", "/v2/models/iris/infer",
         {"data": nan, "headers": {"Inference-Header-Content-Length": str(len(header))}}, 422, "NaN"),
        ("reader token", "/v2/models/iris/infer", {"json": good, "headers": {"Authorization": f"Bearer {reader}"}},
         403, "predictor"),
        ("too large", "/v2/models/iris/infer",
         {"json": {"inputs": [_tensor("input", [1000, 4], "FP64", [SETOSA] * 1000)]}}, 413, "limit"),
    ]


def test_every_error_reads_error_in_the_lane_and_in_flask(config: dict[str, Any]) -> None:
    app = create_app({**config, "serving": {"max_body_bytes": 10_000}})
    try:
        client = app.test_client()
        for label, url, kwargs, status, words in _bad(app):
            for where in ("lane", "flask"):
                if where == "flask":
                    with flask_only(app):
                        response = client.post(url, **kwargs)
                else:
                    response = client.post(url, **kwargs)
                assert response.status_code == status, (label, where, response.get_data())
                assert set(response.json) == {"error"}, (label, where)
                assert words in response.json["error"], (label, where, response.json)
    finally:
        app.extensions[EXTENSION].engine.dispose()


def test_reads_need_a_reader_and_health_is_open(config: dict[str, Any]) -> None:
    app = create_app({**config, "auth": {**config["auth"], "anonymous_role": "none"}})
    try:
        anon = app.test_client()
        for path in ("/v2", "/v2/health/live", "/v2/health/ready"):
            assert anon.get(path).status_code == 200, path
        for path in ("/v2/models/iris", "/v2/models/iris/ready"):
            response = anon.get(path)
            assert response.status_code == 401 and set(response.json) == {"error"}
        assert anon.post("/v2/models/iris/infer", json={}).json == {
            "error": "this needs a token with role predictor or above; send it as 'Authorization: Bearer <token>'"}
    finally:
        app.extensions[EXTENSION].engine.dispose()


def test_v2_counts_as_predictions_and_is_documented(client: FlaskClient) -> None:
    before = client.get("/metrics").get_data(as_text=True)
    assert _infer(client, {"inputs": [_tensor("input", [1, 4], "FP64", SETOSA)]}).status_code == 200
    after = client.get("/metrics").get_data(as_text=True)
    line = 'modelyard_predict_requests_total{model="iris",status="200",version="1"}'
    assert _value(after, line) - _value(before, line) == 1
    requests = 'modelyard_http_requests_total{endpoint="v2.infer",method="POST",status="200"}'
    assert _value(after, requests) - _value(before, requests) == 1
    paths = client.get("/openapi.json").json["paths"]
    assert {"/v2/models/{name}/infer", "/v2/models/{name}/versions/{ref}/infer", "/v2/models/{name}",
            "/v2/health/ready", "/invocations", "/models/{name}/{ref}/invocations",
            "/models/{name}/predict"} <= set(paths)


def _value(text: str, line: str) -> float:
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return 0.0
