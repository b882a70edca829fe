"""The predict routes through the HTTP test client: every input shape and every bad input."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from modelyard.web.context import Runtime
from tests.factories import make_version

SETOSA = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}
VIRGINICA = {"sepal.length": 5.9, "sepal.width": 3.0, "petal.length": 5.1, "petal.width": 1.8}
TUTORIAL = {"sepal.lenght": 5.1, "sepal.width": 3.5, "petal.lenght": 1.4, "petal.width": 0.2}
COLUMNS = list(SETOSA)


def test_tutorial_curl_body_verbatim(client: FlaskClient) -> None:
    response = client.post("/predict", data=
                           '{"sepal.lenght": 5.1, "sepal.width": 3.5, "petal.lenght": 1.4, "petal.width": 0.2}',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.json == {"model": "iris", "version": 1, "predictions": [0], "labels": ["setosa"],
                             "target_value": 0}


def test_virginica_on_the_default_route(client: FlaskClient) -> None:
    body = client.post("/predict", json=VIRGINICA).json
    assert body["predictions"] == [2]
    assert body["labels"] == ["virginica"]
    assert body["target_value"] == 2


def test_target_value_only_for_a_single_record(client: FlaskClient) -> None:
    body = client.post("/predict", json=[SETOSA, VIRGINICA]).json
    assert body["predictions"] == [0, 2]
    assert "target_value" not in body


@pytest.mark.parametrize("ref", ["1", "v1", "production", "latest"])
def test_predict_by_ref(client: FlaskClient, ref: str) -> None:
    response = client.post(f"/models/iris/{ref}/predict", json=SETOSA)
    assert response.status_code == 200
    assert response.json == {"model": "iris", "version": 1, "predictions": [0], "labels": ["setosa"]}


@pytest.mark.parametrize(
    "body",
    [
        [SETOSA, VIRGINICA],
        [list(SETOSA.values()), list(VIRGINICA.values())],
        {"instances": [SETOSA, VIRGINICA]},
        {"instances": [list(SETOSA.values()), list(VIRGINICA.values())]},
        {"inputs": [list(SETOSA.values()), list(VIRGINICA.values())]},
        {"dataframe_records": [SETOSA, VIRGINICA]},
        {"dataframe_split": {"columns": COLUMNS, "data": [list(SETOSA.values()), list(VIRGINICA.values())]}},
        {"dataframe_split": {"columns": COLUMNS[::-1],
                             "data": [list(SETOSA.values())[::-1], list(VIRGINICA.values())[::-1]]}},
        [TUTORIAL, VIRGINICA],
    ],
    ids=["records", "rows", "instances-records", "instances-rows", "inputs", "dataframe_records",
         "dataframe_split", "dataframe_split-reordered", "aliases-in-list"],
)
def test_every_input_shape(client: FlaskClient, body: Any) -> None:
    response = client.post("/models/iris/production/predict", json=body)
    assert response.status_code == 200, response.json
    assert response.json["predictions"] == [0, 2]
    assert response.json["labels"] == ["setosa", "virginica"]


def test_single_bare_row_in_inputs(client: FlaskClient) -> None:
    response = client.post("/models/iris/1/predict", json={"inputs": list(VIRGINICA.values())})
    assert response.json["predictions"] == [2]


def test_integers_are_numbers(client: FlaskClient) -> None:
    response = client.post("/models/iris/1/predict", json={"inputs": [[5, 3, 1, 0]]})
    assert response.status_code == 200


def test_proba_on_a_model_with_predict_proba(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers", alias="production")
    response = client.post("/models/flowers/production/predict?proba=true", json=[SETOSA, VIRGINICA])
    assert response.status_code == 200
    probabilities = response.json["probabilities"]
    assert len(probabilities) == 2 and all(len(p) == 3 for p in probabilities)
    assert all(abs(sum(p) - 1) < 1e-9 for p in probabilities)
    assert max(range(3), key=lambda i: probabilities[1][i]) == 2
    # Which class each probability column is: the class values, and their labels.
    assert response.json["classes"] == [0, 1, 2]
    assert response.json["class_labels"] == ["setosa", "versicolor", "virginica"]


def test_proba_names_string_classes_without_labels(client: FlaskClient, runtime: Runtime) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    names = [["setosa", "versicolor", "virginica"][i] for i in y]
    make_version(runtime, "named", LogisticRegression(max_iter=500).fit(X, names), labels=None)
    answer = client.post("/models/named/1/predict?proba=true", json=[VIRGINICA]).json
    assert answer["classes"] == ["setosa", "versicolor", "virginica"]
    assert "class_labels" not in answer
    assert answer["predictions"] == [answer["classes"][max(range(3), key=lambda i: answer["probabilities"][0][i])]]


def test_a_model_without_a_ref_answers_with_its_production_version(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers", alias="production")
    make_version(runtime, "flowers")
    response = client.post("/models/flowers/predict", json=VIRGINICA)
    assert response.status_code == 200
    assert response.json["version"] == 1 and response.json["predictions"] == [2]
    assert "target_value" not in response.json  # the tutorial's field is POST /predict's
    missing = client.post("/models/nothing/predict", json=VIRGINICA)
    assert missing.status_code == 404 and missing.json["message"] == "model 'nothing' not found"
    make_version(runtime, "staged")
    unpromoted = client.post("/models/staged/predict", json=VIRGINICA)
    assert unpromoted.status_code == 404 and "production" in unpromoted.json["message"]


def test_a_bare_pandas_split_body_is_a_dataframe_split(client: FlaskClient) -> None:
    """What ``DataFrame.to_json(orient="split")`` gives, sent as is, columns in another order."""
    import pandas as pd

    frame = pd.DataFrame([VIRGINICA, SETOSA])[["petal.width", "sepal.length", "petal.length", "sepal.width"]]
    response = client.post("/models/iris/1/predict", data=frame.to_json(orient="split"),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.json
    assert response.json["predictions"] == [2, 0]
    bad = client.post("/models/iris/1/predict", json={"columns": ["nope"], "index": [0], "data": [[1]]})
    assert bad.status_code == 422 and "nope" in bad.json["message"]


def test_proba_false_omits_probabilities(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers")
    response = client.post("/models/flowers/1/predict?proba=false", json=SETOSA)
    assert "probabilities" not in response.json


def test_proba_on_the_svc_is_422(client: FlaskClient) -> None:
    response = client.post("/predict?proba=true", json=SETOSA)
    assert response.status_code == 422
    assert "predict_proba" in response.json["message"]


def test_model_without_labels_answers_predictions_only(client: FlaskClient, runtime: Runtime) -> None:
    from sklearn.linear_model import LinearRegression

    from tests.factories import X, y

    make_version(runtime, "regressor", LinearRegression().fit(X, y), labels=None)
    response = client.post("/models/regressor/1/predict", json=SETOSA)
    assert response.status_code == 200
    assert set(response.json) == {"model", "version", "predictions"}
    assert isinstance(response.json["predictions"][0], float)


def test_promotion_is_visible_on_the_next_request(client: FlaskClient, runtime: Runtime) -> None:
    from modelyard.registry import aliases

    make_version(runtime, "iris")  # version 2, a LogisticRegression
    assert client.post("/predict", json=SETOSA).json["version"] == 1
    with runtime.sessions() as session:
        aliases.set_alias(session, "iris", "production", "2")
    assert client.post("/predict", json=SETOSA).json["version"] == 2


# --- bad input -------------------------------------------------------------------------------


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    body = response.json
    assert body["code"] == status and body["status"] and body["message"]
    return body


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4}, "missing feature: petal.width"),
        ({**SETOSA, "colour": 1}, "unknown feature: colour"),
        ({**SETOSA, "petal.width": "wide"}, "feature 'petal.width' must be a number"),
        ({**SETOSA, "petal.width": None},
         "feature 'petal.width' is missing (null) in row 0, and this model does not accept"),
        ({**SETOSA, "petal.width": True}, "feature 'petal.width' must be a number"),
        ({**SETOSA, "petal.width": [1]}, "feature 'petal.width' must be a number"),
        ({**SETOSA, "sepal.lenght": 5.0}, "given twice"),
        ([[5.1, 3.5, 1.4]], "row 0 has 3 values, the model takes 4"),
        ([[5.1, 3.5, 1.4, 0.2], [1, 2, 3, 4, 5]], "row 1 has 5 values"),
        ([[5.1, 3.5, 1.4, "x"]], "feature 'petal.width' must be a number"),
        ([], "no rows"),
        ({"instances": []}, "no rows"),
        ({"instances": "nope"}, "instances must be a list"),
        ([1, "a"], "must be a record"),
        ("just a string", "the body must be a JSON object"),
        (42, "the body must be a JSON object"),
        ({"dataframe_split": {"columns": COLUMNS}}, "dataframe_split must be an object"),
        ({"dataframe_split": {"columns": COLUMNS[:3], "data": [[1, 2, 3]]}}, "missing feature: petal.width"),
        ({"dataframe_split": {"columns": [*COLUMNS, "x"], "data": [[1, 2, 3, 4, 5]]}}, "unknown feature: x"),
        ({"dataframe_split": {"columns": COLUMNS, "data": [[1, 2, 3]]}}, "has 3 values for 4 columns"),
        ({"dataframe_split": {"columns": COLUMNS, "data": [[1, 2, 3, "x"]]}}, "must be a number"),
    ],
)
def test_bad_features_are_422_naming_them(client: FlaskClient, body: Any, fragment: str) -> None:
    body = _error(client.post("/models/iris/production/predict", json=body), 422)
    assert fragment in body["message"]


def test_missing_features_are_listed_in_errors(client: FlaskClient) -> None:
    body = _error(client.post("/predict", json={"sepal.length": 1}), 422)
    assert body["errors"]["missing"] == ["sepal.width", "petal.length", "petal.width"]


def test_unknown_features_list_what_the_model_takes(client: FlaskClient) -> None:
    body = _error(client.post("/predict", json={**SETOSA, "x": 1}), 422)
    assert body["errors"]["unknown"] == ["x"]
    assert body["errors"]["expected"] == COLUMNS


def test_bad_proba_flag_is_422(client: FlaskClient) -> None:
    _error(client.post("/predict?proba=maybe", json=SETOSA), 422)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_non_json_body_is_415(client: FlaskClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    body = _error(client.post("/predict", data='{"a": 1}', headers=headers), 415)
    assert "application/json" in body["message"]


@pytest.mark.parametrize("data", ['{"sepal.length": 5.1,', "{bad", "", "[1, 2", "NaN"])
def test_malformed_json_is_400(client: FlaskClient, data: str) -> None:
    _error(client.post("/predict", data=data, headers={"Content-Type": "application/json"}), 400)


def test_deeply_nested_json_is_a_clean_error(client: FlaskClient) -> None:
    data = "[" * 100_000 + "]" * 100_000
    response = client.post("/predict", data=data, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "nested more than 1024 levels" in response.json["message"]


def test_oversized_body_is_413(config: dict[str, Any]) -> None:
    from modelyard.app import create_app

    app: Flask = create_app({**config, "serving": {"max_body_bytes": 1000}})
    body = _error(app.test_client().post("/predict", json=[SETOSA] * 100), 413)
    assert body["status"] == "Request Entity Too Large"


def test_too_many_rows_is_413(config: dict[str, Any]) -> None:
    from modelyard.app import create_app

    app: Flask = create_app({**config, "serving": {"max_rows": 5}})
    body = _error(app.test_client().post("/predict", json=[SETOSA] * 6), 413)
    assert "6 rows" in body["message"] and "limit is 5" in body["message"]
    assert app.test_client().post("/predict", json=[SETOSA] * 5).status_code == 200


@pytest.mark.parametrize(
    "url, message",
    [
        ("/models/nope/production/predict", "model 'nope' not found"),
        ("/models/iris/7/predict", "model 'iris' has no version or alias '7'"),
        ("/models/iris/staging/predict", "model 'iris' has no version or alias 'staging'"),
    ],
)
def test_unknown_model_version_or_alias_is_404(client: FlaskClient, url: str, message: str) -> None:
    assert _error(client.post(url, json=SETOSA), 404)["message"] == message


def test_unknown_route_is_404_json(client: FlaskClient) -> None:
    _error(client.post("/models/iris/production/predikt", json=SETOSA), 404)
    _error(client.get("/nothing-here"), 404)


def test_get_on_predict_is_405_json_naming_the_method_it_takes(client: FlaskClient) -> None:
    for url in ("/predict", "/models/iris/1/predict", "/models/iris/predict", "/invocations"):
        response = client.get(url)
        assert _error(response, 405)["message"] == f"GET is not allowed on {url}; it takes POST"
        assert set(response.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    response = client.put("/models/iris")
    assert _error(response, 405)["message"] == "PUT is not allowed on /models/iris; it takes DELETE, GET or PATCH"
    assert set(response.headers["Allow"].split(", ")) == {"DELETE", "GET", "HEAD", "OPTIONS", "PATCH"}


def test_records_for_a_model_uploaded_without_names_point_at_the_features_field(client: FlaskClient) -> None:
    import io
    import pickle

    from tests.factories import fitted_logreg

    uploaded = client.post("/models/bare/versions", content_type="multipart/form-data",  # no `features` field
                           data={"file": (io.BytesIO(pickle.dumps(fitted_logreg())), "m.pkl")})
    assert uploaded.status_code == 201, uploaded.json
    assert client.get("/models/bare/versions/1").json["feature_names"] == ["x0", "x1", "x2", "x3"]
    message = _error(client.post("/models/bare/1/predict", json=SETOSA), 422)["message"]
    assert message.startswith("unknown features: sepal.length, sepal.width, petal.length, petal.width "
                              "(the model takes x0, x1, x2, x3); this version was uploaded without feature names")
    assert "upload it again with a `features` field" in message
    assert client.post("/models/bare/1/predict", json={"inputs": [list(SETOSA.values())]}).status_code == 200
    named = _error(client.post("/models/iris/1/predict", json={"petal": 1.0}), 422)["message"]
    assert "`features` field" not in named


def test_a_model_without_production_says_how_to_predict(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers")
    for url in ("/models/flowers/predict", "/models/flowers/production/predict"):
        assert _error(client.post(url, json=SETOSA), 404)["message"] == (
            "model 'flowers' has no version or alias 'production': promote a version to 'production', "
            "or name one: a number or 'latest'")
    assert client.post("/models/flowers/latest/predict", json=SETOSA).status_code == 200


def test_bad_input_changes_nothing_stored(client: FlaskClient) -> None:
    def stored() -> dict[str, Any]:
        detail = client.get("/models/iris/versions/1").json
        return {k: v for k, v in detail.items() if k not in ("loaded", "load_ms", "last_used")}

    before = stored()
    client.post("/predict", data="{bad", headers={"Content-Type": "application/json"})
    client.post("/predict", json={"x": 1})
    assert stored() == before
    assert client.post("/predict", json=SETOSA).json["predictions"] == [0]


@pytest.mark.parametrize(
    "rows, fragment",
    [
        ([[5.1, 3.5, 1.4, "0.2"]], "must be a number"),
        ([[5.1, 3.5, 1.4, None]], "is missing (null) in row 50"),
        ([[5.1, 3.5, 1.4, True]], "must be a number"),
        ([[5.1, 3.5, 1.4, 0.2], [5.1, 3.5, 1.4]], "row 51 has 3 values"),
        ([[5.1, 3.5, 1.4, [0.2]]], "must be a number"),
        ([[5.1, 3.5, 1.4, {"v": 1}]], "must be a number"),
        ([[5.1, 3.5, 1.4, 10**30]], None),
    ],
)
def test_many_rows_are_checked_as_strictly_as_one(client: FlaskClient, rows: list[Any], fragment: str | None) -> None:
    body = {"inputs": [[5.0, 3.0, 1.0, 0.1]] * 50 + rows}
    response = client.post("/models/iris/1/predict", json=body)
    if fragment is None:
        assert response.status_code == 200 and len(response.json["predictions"]) == 50 + len(rows)
    else:
        assert response.status_code == 422
        assert fragment in response.json["message"]


def test_a_thousand_rows_predict_like_one_by_one(client: FlaskClient) -> None:
    from tests.factories import X

    rows = (X.tolist() * 7)[:1000]
    together = client.post("/models/iris/1/predict", json={"inputs": rows}).json["predictions"]
    alone = [client.post("/models/iris/1/predict", json={"inputs": [r]}).json["predictions"][0] for r in rows[:150]]
    assert len(together) == 1000 and together[:150] == alone


@pytest.mark.parametrize("data", [
    '{"sepal.length": 1e999, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}',
    '{"inputs": [[1e999, 3.5, 1.4, 0.2]]}',
    '[[-1e400, 3.5, 1.4, 0.2]]',
    '{"instances": [[5.1, 3.5, 1.4, 0.2], [5.1, 1e309, 1.4, 0.2]]}',
], ids=["record", "inputs", "bare-rows", "second-row"])
def test_numbers_past_float64_are_400_naming_the_position(client: FlaskClient, data: str) -> None:
    """JSON has no infinity: a number that overflows a double is refused where the body is read
    (orjson and simdjson alike), never sent to the estimator as inf."""
    response = client.post("/models/iris/1/predict", data=data, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "number is infinity when parsed as double" in response.json["message"]
    assert "column" in response.json["message"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_tokens_are_not_json(client: FlaskClient, token: str) -> None:
    response = client.post("/predict", data=f'{{"inputs": [[{token}, 3.5, 1.4, 0.2]]}}',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json["message"].startswith("the body is not valid JSON")
