"""The predict seam: every protocol reads a request into inputs and options, one
``Predictor.predict`` answers, and the protocol writes it; every answer, on every protocol, in the
lane and through Flask's views alike, says which version served it in ``X-Model-Version``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from modelyard.serving.http import PROTOCOLS
from modelyard.serving.service import Body
from modelyard.web.context import Runtime
from tests.factories import make_version
from tests.serving.test_lane import flask_only

SETOSA = [5.1, 3.5, 1.4, 0.2]
RECORD = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}
REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("/predict", {"json": RECORD}, "native"),
    ("/models/flowers/predict", {"json": RECORD}, "native"),
    ("/models/flowers/2/predict?proba=true", {"json": {"inputs": [SETOSA]}}, "native"),
    ("/models/flowers/latest/invocations", {"json": {"inputs": [SETOSA]}}, "mlflow"),
    ("/invocations", {"data": "sepal.length,sepal.width,petal.length,petal.width\n5.1,3.5,1.4,0.2\n",
                      "content_type": "text/csv"}, "mlflow"),
    ("/v2/models/flowers/infer", {"json": {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64",
                                                       "data": SETOSA}]}}, "v2"),
    ("/v2/models/flowers/versions/1/infer", {"json": {"inputs": [{"name": "input", "shape": [1, 4],
                                                                  "datatype": "FP64", "data": SETOSA}]}}, "v2"),
]


@contextlib.contextmanager
def _as_is() -> Iterator[None]:
    yield


@pytest.mark.parametrize("where", ["lane", "flask"])
def test_every_protocol_names_the_version_that_answered(client: FlaskClient, runtime: Runtime, where: str) -> None:
    make_version(runtime, "flowers")
    make_version(runtime, "flowers", alias="production")
    expected = {"/predict": "1", "/invocations": "1", "/v2/models/flowers/versions/1/infer": "1"}
    with flask_only(client.application) if where == "flask" else _as_is():
        for url, kwargs, protocol in REQUESTS:
            response = client.post(url, **kwargs)
            assert response.status_code == 200, (url, response.get_data(as_text=True))
            version = expected.get(url, "2")
            assert response.headers["X-Model-Version"] == version, url
            body = response.json
            if protocol == "native":
                assert str(body["version"]) == version, url
            elif protocol == "v2":
                assert body["model_version"] == version, url
            else:  # MLflow's answer has no version field: the header is the only place
                assert set(body) == {"predictions"}, url


def test_errors_carry_no_version(client: FlaskClient) -> None:
    response = client.post("/models/iris/9/predict", json=RECORD)
    assert response.status_code == 404 and "X-Model-Version" not in response.headers


def test_each_protocol_is_the_same_interface() -> None:
    for name, protocol in PROTOCOLS.items():
        assert callable(protocol.accepts) and callable(protocol.read) and isinstance(protocol.MEDIA_TYPES, str), name


def test_the_predictor_serves_inputs_that_read_the_same_for_every_version(runtime: Runtime) -> None:
    prediction = runtime.predictor.predict(runtime.sessions, "iris", "production", Body([SETOSA]))
    assert (prediction.name, prediction.version, prediction.predicted.tolist()) == ("iris", 1, [0])
    assert prediction.probabilities is None and not prediction.single_record
    assert runtime.predictor.predictions(runtime.sessions, "iris", "1", [RECORD, SETOSA]) == [0, 0]
