"""A model uploaded without an ``example`` is tried on rows read off its own fitted state before
synthetic probes, and an estimator that does not record its width (IsotonicRegression) has it
read off its fitted state: both upload bare and answer what scikit-learn answers."""

from __future__ import annotations

import io
import json
import pickle
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io
from flask.testing import FlaskClient
from sklearn.isotonic import IsotonicRegression
from sklearn.neighbors import KNeighborsClassifier, RadiusNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelyard.registry import introspect
from tests.factories import X, y


def _dump(model: Any, fmt: str) -> bytes:
    if fmt == "pickle":
        return pickle.dumps(model)
    if fmt == "joblib":
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        return buffer.getvalue()
    return skops.io.dumps(model)


def _upload(client: FlaskClient, name: str, data: bytes, **fields: Any) -> Any:
    form: dict[str, Any] = {key: json.dumps(value) for key, value in fields.items()}
    form["file"] = (io.BytesIO(data), "model.bin")
    return client.post(f"/models/{name}/versions", data=form, content_type="multipart/form-data")


@pytest.mark.parametrize("fmt", ["pickle", "joblib", "skops"])
def test_isotonic_regression_on_one_dimensional_data_uploads_bare(client: FlaskClient, fmt: str) -> None:
    model = IsotonicRegression(out_of_bounds="clip").fit(X[:, 2], X[:, 3])
    response = _upload(client, "isotonic", _dump(model, fmt))
    assert response.status_code == 201, response.json
    assert response.json["n_features"] == 1 and response.json["feature_names"] == ["x0"]
    rows = [[1.0], [3.3], [6.9], [12.0]]
    answer = client.post(f"/models/isotonic/{response.json['version']}/predict", json={"inputs": rows})
    assert answer.status_code == 200, answer.json
    np.testing.assert_allclose(answer.json["predictions"], model.predict(np.array(rows)[:, 0]), rtol=1e-12)
    record = client.post(f"/models/isotonic/{response.json['version']}/predict", json={"x0": 4.4})
    assert record.json["predictions"] == pytest.approx(model.predict([4.4]).tolist())


@pytest.mark.parametrize("fmt", ["pickle", "joblib", "skops"])
def test_radius_neighbors_with_the_default_radius_uploads_without_an_example(client: FlaskClient, fmt: str) -> None:
    model = RadiusNeighborsClassifier().fit(X, y)  # radius 1.0: zeros, ones and normal draws find no neighbour
    with pytest.raises(ValueError, match="No neighbors found"):
        model.predict(np.zeros((1, 4)))
    response = _upload(client, "radius", _dump(model, fmt))
    assert response.status_code == 201, response.json
    answer = client.post(f"/models/radius/{response.json['version']}/predict?proba=true",
                         json={"inputs": X[::30].tolist()})
    assert answer.status_code == 200, answer.json
    assert answer.json["predictions"] == model.predict(X[::30]).tolist()
    np.testing.assert_allclose(answer.json["probabilities"], model.predict_proba(X[::30]))


def test_rows_come_from_the_state_of_what_sees_the_raw_input() -> None:
    pipeline = make_pipeline(StandardScaler(), KNeighborsClassifier()).fit(X, y)
    (rows,) = introspect.fitted_rows(pipeline, 4)
    np.testing.assert_allclose(rows, [X.mean(axis=0)])  # the scaler's mean, not the scaled training rows
    neighbours = introspect.fitted_rows(RadiusNeighborsClassifier().fit(X, y), 4)
    assert len(neighbours) == 1 and neighbours[0].shape == (3, 4)
    assert all(any(np.array_equal(row, x) for x in X) for row in neighbours[0])
    assert introspect.fitted_rows(RadiusNeighborsClassifier().fit(X, y), 3) == []  # another width: none


def test_width_is_read_off_the_fitted_state_only_where_it_is_fixed() -> None:
    assert introspect.fitted_width(IsotonicRegression().fit(X[:, 0], y)) == 1
    assert introspect.describe(IsotonicRegression().fit(X[:, 0], y)).n_features == 1
    assert introspect.fitted_width(StandardScaler()) is None


def test_models_fitted_to_predict_on_every_core_upload_and_predict(client: FlaskClient) -> None:
    """n_jobs=-1 makes a forest's or a neighbours model's predict start a joblib pool, whose locks the
    sandbox forbids: the trial predicts sequentially (it answered 422 "Permission denied" before)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.neighbors import KNeighborsClassifier

    for name, model in (("forest", RandomForestRegressor(n_estimators=8, n_jobs=-1, random_state=0).fit(X, y)),
                        ("forest-classes", RandomForestClassifier(n_estimators=8, n_jobs=-1, random_state=0).fit(X, y)),
                        ("neighbours", KNeighborsClassifier(n_jobs=-1).fit(X, y))):
        response = _upload(client, name, pickle.dumps(model))
        assert response.status_code == 201, (name, response.json)
        answer = client.post(f"/models/{name}/1/predict", json={"inputs": X[:5].tolist()})
        assert answer.status_code == 200 and answer.json["predictions"] == model.predict(X[:5]).tolist(), name
