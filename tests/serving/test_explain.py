"""Explanations (issue 26, part 4, additive models): ?explain=true adds per row a base value and
each sent column's contribution, adding up to the model's output (a regressor's prediction, a
classifier's decision function for the class explained), equal to coef * (x - reference mean) for
a linear model; what is not additive, or has no reference, is a 422 that says what is."""

from __future__ import annotations

import io
import json
import math
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask.testing import FlaskClient
from sklearn.compose import make_column_transformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tests.factories import X as IRIS
from tests.factories import y as IRIS_Y

RNG = np.random.default_rng(1)
TRAIN = RNG.normal(size=(300, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, 1.0]
FEATURES = ["a", "b", "c"]
ROWS = [[0.5, 45.0, 1.2], [-1.0, 60.0, 0.9]]


def _upload(client: FlaskClient, name: str, estimator: Any, reference: Any, features: list[str] | None = FEATURES,
            **form: str) -> None:
    data: dict[str, Any] = {"file": (io.BytesIO(pickle.dumps(estimator)), "m.pkl"), **form}
    if features is not None:
        data["features"] = json.dumps(features)
    if reference is not None:
        data["reference"] = json.dumps(reference)
    response = client.post(f"/models/{name}/versions", data=data, content_type="multipart/form-data")
    assert response.status_code == 201, response.json


def _explain(client: FlaskClient, name: str, body: Any) -> Any:
    response = client.post(f"/models/{name}/latest/predict?explain=true", json=body)
    return response


def _adds_up(item: dict[str, Any]) -> bool:
    total = item["base_value"] + math.fsum(item["contributions"].values())
    return math.isclose(total, item["output"], rel_tol=1e-9, abs_tol=1e-9)


def test_a_linear_regression_is_coef_times_the_distance_from_the_reference_mean(client: FlaskClient) -> None:
    model = LinearRegression().fit(TRAIN, TRAIN @ [2.0, -0.5, 30.0] + 4.0)
    _upload(client, "linear", model, TRAIN.tolist())
    answer = _explain(client, "linear", {"inputs": ROWS}).json
    mean = TRAIN.mean(axis=0)
    for row, predicted, item in zip(ROWS, answer["predictions"], answer["explanations"]):
        assert _adds_up(item) and item["output"] == pytest.approx(predicted, rel=1e-12)
        for i, feature in enumerate(FEATURES):
            assert item["contributions"][feature] == pytest.approx(model.coef_[i] * (row[i] - mean[i]), rel=1e-9)
        assert item["base_value"] == pytest.approx(float(model.predict([mean])[0]), rel=1e-9)
        assert "class" not in item
    plain = client.post("/models/linear/latest/predict", json={"inputs": ROWS}).json
    assert "explanations" not in plain and plain["predictions"] == answer["predictions"]


def test_a_scaled_logistic_regression_explains_the_log_odds_in_the_columns_sent(client: FlaskClient) -> None:
    labels = (TRAIN[:, 0] + TRAIN[:, 1] / 10 > 5).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(TRAIN, labels)
    _upload(client, "scaled", model, TRAIN.tolist(), labels=json.dumps(["no", "yes"]))
    answer = _explain(client, "scaled", [dict(zip(FEATURES, row)) for row in ROWS]).json
    for row, item in zip(ROWS, answer["explanations"]):
        assert _adds_up(item) and item["class"] == 1 and set(item["contributions"]) == set(FEATURES)
        assert item["output"] == pytest.approx(float(model.decision_function([row])[0]), rel=1e-9)


def test_a_multiclass_model_explains_the_class_it_predicts(client: FlaskClient) -> None:
    model = LogisticRegression(max_iter=1000).fit(IRIS, IRIS_Y)
    names = ["sl", "sw", "pl", "pw"]
    _upload(client, "flowers", model, IRIS.tolist(), features=names)
    answer = _explain(client, "flowers", {"inputs": IRIS[::50].tolist()}).json
    for row, predicted, item in zip(IRIS[::50], answer["predictions"], answer["explanations"]):
        assert item["class"] == predicted and _adds_up(item)
        assert item["output"] == pytest.approx(float(model.decision_function([row])[0][predicted]), rel=1e-9)


def test_a_one_hot_encoded_string_column_is_explained_as_the_column_sent(client: FlaskClient) -> None:
    frame = pd.DataFrame({"colour": ["red", "blue", "green", "red"] * 25, "size": np.arange(100.0)})
    target = frame["size"] * 2 + frame["colour"].map({"red": 10.0, "blue": 0.0, "green": -5.0})
    model = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["colour"]),
                                                  remainder=StandardScaler()), LinearRegression()).fit(frame, target)
    _upload(client, "shop", model, json.loads(frame.to_json(orient="records")), features=None)
    answer = _explain(client, "shop", [{"colour": "green", "size": 3.0}, {"colour": "red", "size": 80.0}]).json
    first, second = answer["explanations"]
    assert _adds_up(first) and _adds_up(second)
    assert first["contributions"]["colour"] == pytest.approx(-15.0, abs=1e-6)  # green against red, the mode
    assert second["contributions"]["colour"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(("name", "words"), [
    ("neighbours", "a KNeighborsRegressor after StandardScaler is not additive"),
    ("bare", "uploaded without a `reference`"),
    ("iris", "a multiclass SVC's decision function is voted"),
])
def test_what_cannot_be_explained_is_a_422_saying_what_can(client: FlaskClient, name: str, words: str) -> None:
    if name == "neighbours":
        from sklearn.neighbors import KNeighborsRegressor

        _upload(client, name, make_pipeline(StandardScaler(), KNeighborsRegressor()).fit(TRAIN, TRAIN[:, 0]),
                TRAIN.tolist())
    elif name == "bare":
        _upload(client, name, LinearRegression().fit(TRAIN, TRAIN[:, 0]), None)
    response = _explain(client, name, {"inputs": [[5.1, 3.5, 1.4, 0.2]] if name == "iris" else ROWS})
    assert response.status_code == 422 and words in response.json["message"], response.json
    if name != "iris":  # the upload's trial said so first: the detail tells before any server loads it
        detail = client.get(f"/models/{name}/versions/1").json
        assert detail["explainable"] is False and words in detail["unexplainable"]
    assert "explainable: decision trees, random forests" in response.json["message"]
    assert client.post(f"/models/{name}/latest/predict?explain=maybe", json={"inputs": ROWS}).status_code == 422


def _shap(model: Any, rows: np.ndarray) -> np.ndarray:
    import shap

    return np.asarray(shap.TreeExplainer(model, feature_perturbation="tree_path_dependent").shap_values(rows))


@pytest.mark.parametrize("kind", ["tree", "forest", "extra", "boosting"])
def test_tree_regressors_match_shap_and_add_up(client: FlaskClient, kind: str) -> None:
    from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor
    from sklearn.tree import DecisionTreeRegressor

    target = TRAIN @ [1.0, 0.1, 10.0] + np.sin(TRAIN[:, 0]) * 3
    model = {"tree": DecisionTreeRegressor(max_depth=6, random_state=0),
             "forest": RandomForestRegressor(n_estimators=8, max_depth=6, random_state=0),
             "extra": ExtraTreesRegressor(n_estimators=8, max_depth=6, random_state=0),
             "boosting": GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0)}[kind]
    model.fit(TRAIN, target)
    _upload(client, kind, model, None)  # TreeSHAP needs no reference: the trees' own training cover
    rows = TRAIN[:5]
    answer = _explain(client, kind, {"inputs": rows.tolist()}).json
    expected = _shap(model, rows)
    for j, item in enumerate(answer["explanations"]):
        assert _adds_up(item) and item["output"] == pytest.approx(answer["predictions"][j], rel=1e-9)
        assert [item["contributions"][f] for f in FEATURES] == pytest.approx(expected[j].tolist(), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("kind", ["forest", "boosting-binary", "boosting-multiclass"])
def test_tree_classifiers_explain_the_predicted_class(client: FlaskClient, kind: str) -> None:
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    labels = IRIS_Y if kind == "boosting-multiclass" else (IRIS_Y == 2).astype(int)
    model = (RandomForestClassifier(n_estimators=6, max_depth=4, random_state=0) if kind == "forest"
             else GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0)).fit(IRIS, labels)
    names = ["sl", "sw", "pl", "pw"]
    _upload(client, kind, model, None, features=names)
    rows = IRIS[::25]
    answer = _explain(client, kind, {"inputs": rows.tolist()}).json
    if kind == "boosting-multiclass":  # shap explains binary GradientBoostingClassifier only: the sums decide
        for j, item in enumerate(answer["explanations"]):
            column = answer["predictions"][j]
            assert item["class"] == column and _adds_up(item)
            assert item["output"] == pytest.approx(float(model.decision_function(rows[j:j + 1])[0][column]), rel=1e-9)
        return
    expected = _shap(model, rows)
    for j, item in enumerate(answer["explanations"]):
        assert _adds_up(item)
        if kind == "forest":  # the predicted class's probability
            column = answer["predictions"][j]
            assert item["class"] == column
            assert item["output"] == pytest.approx(model.predict_proba(rows[j:j + 1])[0][column], rel=1e-9)
            shap_row = expected[j, :, column] if expected.ndim == 3 else expected[column][j]
        else:  # the log-odds of class 1
            assert item["class"] == 1
            assert item["output"] == pytest.approx(float(model.decision_function(rows[j:j + 1])[0]), rel=1e-9)
            shap_row = expected[j]
        assert [item["contributions"][f] for f in names] == pytest.approx(np.asarray(shap_row).tolist(), rel=1e-6,
                                                                           abs=1e-9)


def test_an_explanation_too_costly_for_a_request_is_a_422(client: FlaskClient) -> None:
    forest = RandomForestRegressor(n_estimators=40, random_state=0).fit(TRAIN, TRAIN[:, 0])
    _upload(client, "big", forest, None)
    response = _explain(client, "big", {"inputs": TRAIN[:50].tolist()})
    assert response.status_code == 422 and "send fewer rows" in response.json["message"], response.json
    assert _explain(client, "big", {"inputs": TRAIN[:1].tolist()}).status_code == 200


def test_the_open_inference_protocol_asks_with_a_parameter(client: FlaskClient) -> None:
    model = LinearRegression().fit(TRAIN, TRAIN @ [2.0, -0.5, 30.0])
    _upload(client, "v2linear", model, TRAIN.tolist())
    body = {"inputs": [{"name": "input-0", "shape": [2, 3], "datatype": "FP64", "data": ROWS}],
            "parameters": {"explain": True}}
    answer = client.post("/v2/models/v2linear/infer", json=body).json
    explanations = answer["parameters"]["explanations"]
    assert len(explanations) == 2 and all(_adds_up(item) for item in explanations)
    assert [item["output"] for item in explanations] == pytest.approx(answer["outputs"][0]["data"], rel=1e-12)
    refused = client.post("/v2/models/v2linear/infer", json={**body, "parameters": {"explain": "yes"}})
    assert refused.status_code == 422 and "parameters.explain must be true or false" in refused.json["error"]


def test_a_model_of_several_outputs_serves_and_says_why_it_is_not_explained(client: FlaskClient) -> None:
    from sklearn.multioutput import MultiOutputClassifier

    labels = np.column_stack([[0, 1, 2] * 100, [1, 0] * 150])
    _upload(client, "multi", MultiOutputClassifier(LogisticRegression()).fit(TRAIN, labels), TRAIN.tolist())
    assert client.post("/models/multi/latest/predict", json={"inputs": ROWS}).status_code == 200
    response = _explain(client, "multi", {"inputs": ROWS})
    assert response.status_code == 422 and "a model of several outputs" in response.json["message"]


def test_the_explainer_never_raises_while_a_version_loads() -> None:
    from modelyard.serving.explain import explainer_for

    class Odd:
        classes_ = np.array([0, 1])

        @property
        def coef_(self) -> Any:
            raise RuntimeError("no coefficients today")

    assert explainer_for(Odd(), FEATURES, None).startswith("its structure could not be read (RuntimeError")


def test_the_version_detail_says_what_is_explainable_before_it_is_loaded(client: FlaskClient) -> None:
    from sklearn.tree import DecisionTreeRegressor

    _upload(client, "tree", DecisionTreeRegressor(max_depth=3).fit(TRAIN, TRAIN[:, 0]), None)
    _upload(client, "linear", LinearRegression().fit(TRAIN, TRAIN[:, 0]), TRAIN.tolist())
    for name in ("tree", "linear"):
        detail = client.get(f"/models/{name}/versions/1").json
        assert detail["loaded"] is False and detail["explainable"] is True and detail["unexplainable"] is None
        assert _explain(client, name, {"inputs": ROWS}).status_code == 200
