"""Every output shape is answered (never a 5xx), text models take strings, and null is a
missing value for estimators that take one."""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.multioutput import MultiOutputClassifier
from sklearn.pipeline import make_pipeline

X = np.random.RandomState(0).rand(30, 3)


def upload(client: FlaskClient, name: str, estimator: Any) -> Any:
    response = client.post(f"/models/{name}/versions", data={"file": (io.BytesIO(pickle.dumps(estimator)), "m.pkl")},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.json
    return response.json


def predict(client: FlaskClient, name: str, body: Any, proba: bool = False) -> Any:
    response = client.post(f"/models/{name}/latest/predict" + ("?proba=true" if proba else ""), json=body)
    assert response.status_code == 200, response.json
    return response.json


@pytest.mark.parametrize("y, expected", [
    (["cat", "dog", "cat"] * 10, "cat"),
    ([True, False, True] * 10, True),
    ([1, 2, 1] * 10, 1),
], ids=["strings", "booleans", "integers"])
def test_class_values_of_every_type_are_answered(client: FlaskClient, y: list[Any], expected: Any) -> None:
    upload(client, "m", DummyClassifier(strategy="most_frequent").fit(X, y))
    assert predict(client, "m", {"inputs": X[:2].tolist()})["predictions"] == [expected, expected]


def test_float_predictions_are_answered(client: FlaskClient) -> None:
    upload(client, "m", DummyRegressor(strategy="constant", constant=2.5).fit(X, X[:, 0]))
    assert predict(client, "m", {"inputs": X[:2].tolist()})["predictions"] == [2.5, 2.5]


def test_two_dimensional_predictions_are_answered(client: FlaskClient) -> None:
    Y = np.column_stack([[0, 1, 2] * 10, [1, 0, 1] * 10])
    model = MultiOutputClassifier(LogisticRegression()).fit(X, Y)
    detail = upload(client, "m", model)
    assert detail["classes"] == [[0, 1, 2], [0, 1]]
    body = predict(client, "m", {"inputs": X[:2].tolist()}, proba=True)
    assert body["predictions"] == model.predict(X[:2]).tolist()
    expected = model.predict_proba(X[:2])
    assert len(body["probabilities"]) == 2  # one array per output
    for got, want in zip(body["probabilities"], expected):
        np.testing.assert_allclose(got, want)
    assert "labels" not in body


def test_labels_on_a_multi_output_model_are_422(client: FlaskClient) -> None:
    model = MultiOutputClassifier(LogisticRegression()).fit(X, np.column_stack([[0, 1] * 15, [1, 0] * 15]))
    response = client.post("/models/m/versions", data={"file": (io.BytesIO(pickle.dumps(model)), "m.pkl"),
                                                       "labels": '["a", "b"]'},
                           content_type="multipart/form-data")
    assert response.status_code == 422
    assert "single-output" in response.json["message"]


class ObjectArrays(ClassifierMixin, BaseEstimator):
    """Answers an object array of NumPy scalars, as some estimators do."""

    def fit(self, X: Any, y: Any) -> ObjectArrays:
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X: Any) -> Any:
        return np.array([np.float64(1.5), np.int64(2)] * (len(X) // 2) + [np.str_("x")] * (len(X) % 2), dtype=object)


def test_object_arrays_of_numpy_scalars_are_answered() -> None:
    from modelyard.serving.service import plain

    assert plain(ObjectArrays().fit(X, None).predict(X[:3])) == [1.5, 2, "x"]
    assert plain([np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])]) == [[[0.5, 0.5]], [[1.0, 0.0]]]


TEXTS = ["good great fine", "bad awful poor", "meh so so"] * 10


def _text_model() -> Any:
    return make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, [0, 1, 2] * 10)


@pytest.mark.parametrize("body", [
    ["good great", "awful"],
    {"instances": ["good great", "awful"]},
    {"inputs": ["good great", "awful"]},
    [{"text": "good great"}, {"text": "awful"}],
    {"dataframe_split": {"columns": ["text"], "data": [["good great"], ["awful"]]}},
], ids=["list", "instances", "inputs", "records", "dataframe-split"])
def test_a_text_model_is_served_from_strings(client: FlaskClient, body: Any) -> None:
    detail = upload(client, "reviews", _text_model())
    assert detail["input_kind"] == "text"
    assert detail["feature_names"] == ["text"]
    assert predict(client, "reviews", body)["predictions"] == _text_model().predict(["good great", "awful"]).tolist()


def test_one_text_record_is_one_row(client: FlaskClient) -> None:
    upload(client, "reviews", _text_model())
    assert predict(client, "reviews", {"text": "bad awful"})["predictions"] == [1]


@pytest.mark.parametrize("body, fragment", [
    ([1.5, 2.5], "must be a string"),
    ([{"words": "x"}], "unknown feature"),
    ([None], "must be a string"),
], ids=["numbers", "unknown-key", "null"])
def test_a_text_model_refuses_what_is_not_text(client: FlaskClient, body: Any, fragment: str) -> None:
    upload(client, "reviews", _text_model())
    response = client.post("/models/reviews/latest/predict", json=body)
    assert response.status_code == 422
    assert fragment in response.json["message"]


def _imputing_model() -> Any:
    with_nan = X.copy()
    with_nan[::4, 1] = np.nan
    return make_pipeline(SimpleImputer(), LogisticRegression()).fit(with_nan, [0, 1, 2] * 10)


@pytest.mark.parametrize("body", [
    {"inputs": [[0.2, None, 0.4]]},
    [0.2, None, 0.4],
    {"x0": 0.2, "x1": None, "x2": 0.4},
    {"dataframe_split": {"columns": ["x0", "x1", "x2"], "data": [[0.2, None, 0.4]]}},
], ids=["rows", "bare-row", "record", "dataframe-split"])
def test_null_is_a_missing_value_for_an_imputing_pipeline(client: FlaskClient, body: Any) -> None:
    detail = upload(client, "imputed", _imputing_model())
    assert detail["allow_nan"] is True
    expected = _imputing_model().predict_proba([[0.2, np.nan, 0.4]])
    np.testing.assert_allclose(predict(client, "imputed", body, proba=True)["probabilities"], expected)


def test_null_reaches_an_estimator_that_handles_nan_itself(client: FlaskClient) -> None:
    model = HistGradientBoostingRegressor(max_iter=5).fit(np.where(X > 0.9, np.nan, X), X[:, 0])
    assert upload(client, "hgb", model)["allow_nan"] is True
    got = predict(client, "hgb", {"inputs": [[None, 0.5, 0.5]]})["predictions"]
    np.testing.assert_allclose(got, model.predict([[np.nan, 0.5, 0.5]]))


def test_null_for_a_model_without_missing_values_is_422_saying_so(client: FlaskClient) -> None:
    assert upload(client, "plain", LogisticRegression().fit(X, [0, 1, 2] * 10))["allow_nan"] is False
    response = client.post("/models/plain/latest/predict", json={"inputs": [[0.2, None, 0.4]]})
    assert response.status_code == 422
    assert response.json["errors"] == {"feature": "x1", "row": 0, "missing_values": False}
    assert "does not accept missing values" in response.json["message"]


def _frame_model(imputed: bool) -> Any:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.DataFrame({"review": TEXTS, "colour": ["red", "blue", "green"] * 10, "size": X[:, 0]})
    numeric = SimpleImputer() if imputed else "passthrough"
    return make_pipeline(
        ColumnTransformer([("text", TfidfVectorizer(), "review"), ("size", numeric, ["size"]),
                           ("colour", OneHotEncoder(handle_unknown="ignore"), ["colour"])]),
        LogisticRegression(),
    ).fit(frame, [0, 1, 2] * 10)


def test_a_text_column_in_a_dataframe_model_takes_strings(client: FlaskClient) -> None:
    import pandas as pd

    detail = upload(client, "mixed", _frame_model(imputed=True))
    assert detail["input_kind"] == "dataframe"
    assert dict(zip(detail["feature_names"], detail["feature_types"])) == {
        "review": "string", "colour": "string", "size": "number"}
    assert detail["allow_nan"] is True
    record = {"review": "bad awful", "colour": "red", "size": None}
    expected = _frame_model(imputed=True).predict(pd.DataFrame([{**record, "size": np.nan}]))
    assert predict(client, "mixed", record)["predictions"] == expected.tolist()


def test_null_in_a_dataframe_model_without_imputation_is_422(client: FlaskClient) -> None:
    assert upload(client, "mixed", _frame_model(imputed=False))["allow_nan"] is False
    response = client.post("/models/mixed/latest/predict", json={"review": "bad", "colour": "red", "size": None})
    assert response.status_code == 422
    assert "does not accept missing values" in response.json["message"]
