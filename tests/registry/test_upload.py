"""POST /models/<name>/versions: formats, metadata, validation, and what is stored."""

from __future__ import annotations

import io
import json
import pickle
import tempfile
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io
from flask.testing import FlaskClient
from sklearn.cluster import KMeans
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.preprocessing import StandardScaler

from modelyard.registry.storage import stream_of
from modelyard.web.context import Runtime
from tests.conftest import admin_client
from tests.factories import X, fitted_logreg, stored_digests, y

SETOSA = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}
FEATURES = list(SETOSA)


def upload(client: FlaskClient, name: str, data: bytes, **fields: Any) -> Any:
    form: dict[str, Any] = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in fields.items()}
    form["file"] = (io.BytesIO(data), "model.bin")
    return client.post(f"/models/{name}/versions", data=form, content_type="multipart/form-data")


def joblib_bytes(obj: Any, compress: Any = 0) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer, compress=compress)
    return buffer.getvalue()


def test_upload_creates_model_and_version_1(client: FlaskClient, runtime: Runtime) -> None:
    response = upload(client, "flowers", pickle.dumps(fitted_logreg()), features=FEATURES,
                      labels=["setosa", "versicolor", "virginica"], description="first")
    assert response.status_code == 201, response.json
    body = response.json
    assert response.headers["Location"].endswith("/models/flowers/versions/1")
    assert body["version"] == 1 and body["name"] == "flowers"
    assert body["format"] == "pickle"
    assert body["estimator"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert body["n_features"] == 4 and body["feature_names"] == FEATURES
    assert body["classes"] == [0, 1, 2] and body["has_proba"] is True
    assert body["description"] == "first"
    assert runtime.store.exists(body["sha256"])
    assert client.get("/models/flowers").json["latest_version"] == 1


def test_upload_records_metadata_and_tags(client: FlaskClient) -> None:
    body = upload(client, "flowers", pickle.dumps(fitted_logreg()), features=FEATURES,
                  metadata={"metrics": {"accuracy": 0.97}, "params": {"C": 1.0, "solver": "lbfgs"},
                            "tags": {"team": "a", "stage": "x"}},
                  tags={"stage": "candidate"}).json
    assert body["metadata"] == {"metrics": {"accuracy": 0.97}, "params": {"C": 1.0, "solver": "lbfgs"}}
    assert body["tags"] == {"team": "a", "stage": "candidate"}


def test_feature_names_come_from_a_dataframe_fit(client: FlaskClient) -> None:
    frame = load_iris(as_frame=True)
    model = LogisticRegression(max_iter=500).fit(frame.data, frame.target)
    body = upload(client, "frame", pickle.dumps(model)).json
    assert body["feature_names"] == list(frame.data.columns)
    record = dict(zip(frame.data.columns, [5.9, 3.0, 5.1, 1.8]))
    response = client.post("/models/frame/1/predict", json=record)
    assert response.status_code == 200 and response.json["predictions"] == [2]


def test_unnamed_features_default_to_x0_xn(client: FlaskClient) -> None:
    body = upload(client, "plain", pickle.dumps(fitted_logreg())).json
    assert body["feature_names"] == ["x0", "x1", "x2", "x3"]
    assert client.post("/models/plain/1/predict", json={"x0": 5.1, "x1": 3.5, "x2": 1.4, "x3": 0.2}).status_code == 200


@pytest.mark.parametrize(
    "fmt, data",
    [
        ("pickle", lambda m: pickle.dumps(m, protocol=2)),
        ("pickle", lambda m: pickle.dumps(m, protocol=5)),
        ("joblib", lambda m: joblib_bytes(m)),
        ("joblib", lambda m: joblib_bytes(m, compress=3)),
        ("joblib", lambda m: joblib_bytes(m, compress=("gzip", 3))),
        ("skops", lambda m: skops.io.dumps(m)),
    ],
    ids=["pickle2", "pickle5", "joblib", "joblib-zlib", "joblib-gzip", "skops"],
)
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "detected"])
def test_every_format_is_accepted_and_predicts(client: FlaskClient, fmt: str, data: Any, declared: bool) -> None:
    fields = {"format": fmt} if declared else {}
    response = upload(client, "formats", data(fitted_logreg()), features=FEATURES, **fields)
    assert response.status_code == 201, response.json
    assert response.json["format"] == fmt
    answer = client.post("/models/formats/latest/predict", json=SETOSA)
    assert answer.status_code == 200 and answer.json["predictions"] == [0]


def _large_model() -> Any:
    """A fitted model of a few MiB that compresses poorly (random training rows): past the size
    under which an upload is read into memory, in every format."""
    from sklearn.neighbors import KNeighborsClassifier

    rows = np.random.default_rng(0).normal(size=(60000, 4))
    return KNeighborsClassifier(n_neighbors=3).fit(rows, (rows[:, 0] > 0).astype(int))


@pytest.mark.parametrize(
    "fmt, dump",
    [("pickle", pickle.dumps), ("joblib", joblib_bytes), ("joblib", lambda m: joblib_bytes(m, compress=3)),
     ("skops", skops.io.dumps)],
    ids=["pickle", "joblib", "joblib-zlib", "skops"],
)
def test_a_large_upload_is_mapped_from_its_temporary_file_and_stored_whole(
        client: FlaskClient, runtime: Runtime, fmt: str, dump: Any) -> None:
    """werkzeug streams a large file to a temporary file; the upload maps it rather than read it
    into memory, and every step (scan, sandbox, store) reads the map."""
    import hashlib
    import mmap

    from modelyard.registry import api

    model = _large_model()
    data = dump(model)
    assert len(data) > api._IN_MEMORY_BYTES
    spool = tempfile.SpooledTemporaryFile(max_size=1024 * 500)
    spool.write(data)
    mapped = api._read_upload(spool, len(data))
    assert isinstance(mapped, mmap.mmap) and mapped[:] == data
    mapped.close()
    assert api._read_upload(io.BytesIO(data), len(data)) == data  # no file under it: read
    response = upload(client, "large", data)
    assert response.status_code == 201, response.json
    assert response.json["format"] == fmt
    assert response.json["sha256"] == hashlib.sha256(data).hexdigest() and response.json["size_bytes"] == len(data)
    assert stream_of(runtime.store.open(response.json["sha256"])).read() == data
    rows = [[0.5, 0.1, 0.2, 0.3], [-0.5, 0.1, 0.2, 0.3]]
    answer = client.post("/models/large/latest/predict", json={"inputs": rows})
    assert answer.status_code == 200 and answer.json["predictions"] == model.predict(np.array(rows)).tolist()


def test_a_hostile_file_past_the_in_memory_size_is_refused_by_the_scan(client: FlaskClient, runtime: Runtime) -> None:
    import os as os_module

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return os_module.system, ("true",)

    data = pickle.dumps([b"x" * (2 << 20), Payload()])
    response = upload(client, "hostile-large", data)
    assert response.status_code == 422 and "system" in response.json["message"], response.json
    assert client.get("/models/hostile-large").status_code == 404


def test_plain_pickle_declared_as_joblib_is_accepted(client: FlaskClient) -> None:
    response = upload(client, "m", pickle.dumps(fitted_logreg()), format="joblib")
    assert response.status_code == 201 and response.json["format"] == "joblib"


@pytest.mark.parametrize(
    "declared, data",
    [
        ("skops", lambda: pickle.dumps(fitted_logreg())),
        ("pickle", lambda: skops.io.dumps(fitted_logreg())),
        ("pickle", lambda: joblib_bytes(fitted_logreg(), compress=3)),
        ("joblib", lambda: skops.io.dumps(fitted_logreg())),
    ],
)
def test_declared_format_contradicted_by_content_is_422(client: FlaskClient, declared: str, data: Any) -> None:
    response = upload(client, "m", data(), format=declared)
    assert response.status_code == 422
    assert f"declared as {declared}" in response.json["message"]


def test_other_estimators_register(client: FlaskClient) -> None:
    kmeans = KMeans(n_clusters=3, n_init=2, random_state=0).fit(X)
    assert upload(client, "clusters", pickle.dumps(kmeans)).status_code == 201
    regression = LinearRegression().fit(X, y)
    body = upload(client, "reg", joblib_bytes(regression)).json
    assert body["classes"] is None and body["labels"] is None and body["has_proba"] is False


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"features": ["a", "b"]}, "2 feature names given, but the estimator takes 4"),
        ({"features": ["a", "a", "b", "c"]}, "feature names must be unique"),
        ({"labels": ["one", "two"]}, "2 labels given, but the estimator has 3 classes"),
        ({"feature_aliases": {"len": "nope"}}, "feature aliases point at unknown features: nope"),
        ({"feature_aliases": {"x0": "x1"}}, "must not be feature names"),
    ],
)
def test_metadata_contradicting_the_estimator_is_422(client: FlaskClient, fields: dict[str, Any],
                                                     fragment: str) -> None:
    response = upload(client, "m", pickle.dumps(fitted_logreg()), **fields)
    assert response.status_code == 422
    assert fragment in response.json["message"]
    assert client.get("/models/m").status_code == 404  # nothing stored


def test_feature_names_must_match_a_dataframe_fit(client: FlaskClient) -> None:
    frame = load_iris(as_frame=True)
    model = LogisticRegression(max_iter=500).fit(frame.data, frame.target)
    response = upload(client, "m", pickle.dumps(model), features=list(frame.data.columns)[::-1])
    assert response.status_code == 422
    assert "differ from those the estimator was fitted with" in response.json["message"]


@pytest.mark.parametrize(
    "data, fragment",
    [
        (pickle.dumps({"not": "a model"}), "has no predict method"),
        (pickle.dumps(StandardScaler().fit(X)), "has no predict method"),
        (b"\x80\x05garbage", "not a valid pickle stream"),
        (pickle.dumps(fitted_logreg())[:-20], "not a valid pickle stream"),
        (b"PK\x03\x04broken zip", "skops archive: not a valid zip file"),
    ],
    ids=["dict", "transformer", "garbage", "truncated", "bad-zip"],
)
def test_files_that_are_not_models_are_422(client: FlaskClient, data: bytes, fragment: str) -> None:
    response = upload(client, "m", data)
    assert response.status_code == 422
    assert fragment in response.json["message"]


def _bounded_model() -> Any:
    """Predicts only inside [10, 30]: every probe row (zeros, ones, normal draws) is outside."""
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(out_of_bounds="raise").fit([10.0, 20.0, 30.0], [1.0, 2.0, 3.0])


def test_estimator_that_no_probe_row_can_predict_is_422_with_the_last_error(client: FlaskClient) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    never = KNeighborsClassifier(n_neighbors=5).fit([[0.0], [1.0], [2.0]], [0, 1, 0])  # 5 neighbours of 3 rows
    response = upload(client, "m", pickle.dumps(never))
    assert response.status_code == 422
    assert "cannot predict from a numeric row" in response.json["message"]
    assert "Expected n_neighbors <= n_samples_fit" in response.json["message"]
    assert "send an `example` field" in response.json["message"]


def test_an_example_the_model_predicts_admits_it_and_is_kept(client: FlaskClient) -> None:
    response = upload(client, "m", pickle.dumps(_bounded_model()), features=["x"], example=[[15.0], [25.0]])
    assert response.status_code == 201, response.json
    assert response.json["example"] == [[15.0], [25.0]]
    assert client.get("/models/m/versions/1").json["example"] == [[15.0], [25.0]]


def test_records_as_example_are_read_by_feature_name(client: FlaskClient) -> None:
    response = upload(client, "m", pickle.dumps(_bounded_model()), features=["x"], example={"x": 12.5})
    assert response.status_code == 201, response.json


@pytest.mark.parametrize(
    "example, fragment",
    [
        ([[1.0]], "below the interpolation range"),
        ({"y": 15.0}, "does not fit the model's features"),
        ([[15.0, 1.0]], "must be a record or a row of 1 values"),
        ([], "non-empty list"),
        ([[[15.0]]], "holds a nested value"),
    ],
    ids=["fails-to-predict", "unknown-feature", "too-wide", "empty", "nested"],
)
def test_an_example_that_does_not_fit_is_422_and_stores_nothing(
    client: FlaskClient, runtime: Runtime, example: Any, fragment: str
) -> None:
    response = upload(client, "m", pickle.dumps(_bounded_model()), features=["x"], example=example)
    assert response.status_code == 422
    assert fragment in response.json["message"]
    assert client.get("/models/m").status_code == 404


def _column_model() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.DataFrame({"colour": ["red", "blue", "red", "green"] * 5, "size": [1.0, 2.0, 3.0, 4.0] * 5})
    return make_pipeline(
        ColumnTransformer([("c", OneHotEncoder(handle_unknown="ignore"), ["colour"])], remainder="passthrough"),
        LogisticRegression(),
    ).fit(frame, [0, 1, 0, 1] * 5)


def test_a_model_with_string_columns_takes_a_dataframe(client: FlaskClient) -> None:
    body = upload(client, "shop", pickle.dumps(_column_model())).json
    assert body["input_kind"] == "dataframe"
    assert body["feature_names"] == ["colour", "size"]
    assert body["feature_types"] == ["string", "number"]
    response = client.post("/models/shop/1/predict", json=[{"colour": "blue", "size": 2.0}, {"colour": "red",
                                                                                             "size": 1.0}])
    assert response.status_code == 200, response.json
    assert response.json["predictions"] == [1, 0]
    split = {"dataframe_split": {"columns": ["size", "colour"], "data": [[2.0, "blue"]]}}
    assert client.post("/models/shop/1/predict", json=split).json["predictions"] == [1]
    assert client.get("/models/shop/versions/1").json["fast_path"] is False  # a DataFrame: its own predict


@pytest.mark.parametrize(
    "record, fragment",
    [({"colour": 3, "size": 2.0}, "feature 'colour' must be a string"),
     ({"colour": "blue", "size": "big"}, "feature 'size' must be a number"),
     ({"colour": "blue"}, "missing feature: size")],
)
def test_dataframe_inputs_are_typed(client: FlaskClient, record: dict[str, Any], fragment: str) -> None:
    upload(client, "shop", pickle.dumps(_column_model()))
    response = client.post("/models/shop/1/predict", json=record)
    assert response.status_code == 422
    assert fragment in response.json["message"]


def test_numeric_models_stay_on_the_array_path(client: FlaskClient) -> None:
    body = upload(client, "plain", pickle.dumps(fitted_logreg())).json
    assert body["input_kind"] == "array" and body["feature_types"] is None


def test_hostile_pickle_is_422_naming_the_global_and_stores_nothing(client: FlaskClient, runtime: Runtime,
                                                                    tmp_path: Any) -> None:
    import os

    marker = tmp_path / "owned"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return os.system, (f"touch {marker}",)

    response = upload(client, "evil", pickle.dumps(Payload()))
    assert response.status_code == 422
    assert response.json["errors"]["global"] in {"posix.system", "os.system"}
    assert not marker.exists()
    assert client.get("/models/evil").status_code == 404
    assert stored_digests(runtime.store) == {client.get("/models/iris/versions/1").json["sha256"]}


def test_empty_file_is_422(client: FlaskClient) -> None:
    response = upload(client, "m", b"")
    assert response.status_code == 422
    assert "empty" in response.json["message"]


def test_missing_file_is_422(client: FlaskClient) -> None:
    response = client.post("/models/m/versions", data={"description": "x"}, content_type="multipart/form-data")
    assert response.status_code == 422
    assert "file" in json.dumps(response.json["errors"])


def test_non_multipart_upload_is_415(client: FlaskClient) -> None:
    response = client.post("/models/m/versions", json={"file": "x"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json["message"]


@pytest.mark.parametrize(
    "field, value",
    [("features", "not json"), ("features", '"a string"'), ("labels", "{}"), ("metadata", "[1]"),
     ("metadata", '{"metrics": {"acc": "high"}}'), ("metadata", '{"other": 1}'), ("tags", '{"a": 1}'),
     ("feature_aliases", '["x"]'), ("format", "zip")],
)
def test_malformed_fields_are_422(client: FlaskClient, field: str, value: str) -> None:
    response = upload(client, "m", pickle.dumps(fitted_logreg()), **{field: value})
    assert response.status_code == 422
    assert field in json.dumps(response.json["errors"])


@pytest.mark.parametrize("name", ["-leading-dash", "has space", "a" * 129, "sl%2Fash", ".hidden"])
def test_invalid_model_names_are_422(client: FlaskClient, name: str) -> None:
    response = upload(client, name, pickle.dumps(fitted_logreg()))
    assert response.status_code in (404, 422)  # a raw '/' never reaches the route
    if response.status_code == 422:
        assert "invalid model name" in response.json["message"]


def test_oversized_file_is_413_and_stores_nothing(config: dict[str, Any]) -> None:
    from modelyard.app import create_app

    app = create_app({**config, "upload": {"max_bytes": 500}})
    client = admin_client(app)
    response = upload(client, "big", pickle.dumps(fitted_logreg()))
    assert response.status_code == 413
    assert response.json["code"] == 413
    assert client.get("/models/big").status_code == 404


def test_oversized_request_is_413_before_parsing(config: dict[str, Any]) -> None:
    from modelyard.app import create_app

    app = create_app({**config, "upload": {"max_bytes": 500}})
    response = upload(admin_client(app), "big", b"\x80" * (3 << 20))
    assert response.status_code == 413
    assert response.json["status"] == "Request Entity Too Large"


def test_uploads_above_the_predict_body_limit_are_accepted(config: dict[str, Any]) -> None:
    from modelyard.app import create_app

    app = create_app({**config, "serving": {"max_body_bytes": 100}})
    response = upload(admin_client(app), "m", pickle.dumps(fitted_logreg()))
    assert response.status_code == 201


def test_same_bytes_twice_share_one_blob(client: FlaskClient, runtime: Runtime) -> None:
    data = pickle.dumps(fitted_logreg())
    first = upload(client, "a", data).json
    second = upload(client, "b", data).json
    assert first["sha256"] == second["sha256"]
    assert client.delete("/models/a").status_code == 204
    assert runtime.store.exists(second["sha256"])  # still used by b
    assert client.post("/models/b/1/predict", json={"x0": 1, "x1": 2, "x2": 3, "x3": 4}).status_code == 200


@pytest.mark.parametrize(
    "form, message",
    [
        ({"file": (b"hello, this is a text file\n", "notes.txt")},
         "not a model file: expected pickle, joblib or skops"),
        ({"file": "model.pkl"}, "form field `file`: must be a file upload (curl -F file=@model.pkl), not a text field"),
        ({}, "form field `file`: a model file is required (curl -F file=@model.pkl)"),
        ({"file": (pickle.dumps(fitted_logreg()), "m.pkl"), "labels": "['setosa', 'versicolor']"},
         'form field `labels`: must be a JSON list, e.g. ["setosa", "versicolor", "virginica"]'),
        ({"file": (pickle.dumps(fitted_logreg()), "m.pkl"), "features": "a,b,c,d"},
         "form field `features`: must be a JSON list of feature names"),
        ({"file": (pickle.dumps(fitted_logreg()), "m.pkl"), "metadata": "accuracy=0.9"},
         "form field `metadata`: must be a JSON object"),
        ({"file": (pickle.dumps(fitted_logreg()), "m.pkl"), "example": json.dumps([[5.1, 3.5, 1.4,
                                                                                                0.2]] * 101)},
         "form field `example`: must be JSON rows or records, e.g. [[5.1, 3.5, 1.4, 0.2]]: at most 100 rows"),
    ],
    ids=["text-file", "file-without-at", "no-file", "python-list-labels", "csv-features", "metadata-not-json",
         "example-too-long"],
)
def test_upload_errors_say_what_to_do(client: FlaskClient, form: dict[str, Any], message: str) -> None:
    # A fresh stream per run: the parameters are shared by both backends' runs.
    form = {k: (io.BytesIO(v[0]), v[1]) if isinstance(v, tuple) else v for k, v in form.items()}
    response = client.post("/models/m/versions", data=form, content_type="multipart/form-data")
    assert response.status_code == 422
    assert response.json["message"].startswith(message), response.json["message"]
    assert client.get("/models/m").status_code == 404
