"""The predict lane in front of Flask answers exactly as the Flask views would: same statuses,
same JSON, same headers, same order of checks, same metrics."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sklearn
from flask import Flask
from flask.testing import FlaskClient

from modelyard.app import create_app
from modelyard.registry import auth
from modelyard.serving.http import PredictLane, match
from modelyard.web.context import EXTENSION

SETOSA = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}
TUTORIAL = {"sepal.lenght": 5.1, "sepal.width": 3.5, "petal.lenght": 1.4, "petal.width": 0.2}
JSON = {"Content-Type": "application/json"}


@contextmanager
def flask_only(app: Flask) -> Iterator[None]:
    """Serve through Flask's own views for a while, as if the lane were not there."""
    lane = app.wsgi_app
    assert isinstance(lane, PredictLane)
    app.wsgi_app = lane.app  # type: ignore[method-assign]
    try:
        yield
    finally:
        app.wsgi_app = lane  # type: ignore[method-assign]


def _token(app: Flask, role: str) -> str:
    rt = app.extensions[EXTENSION]
    with rt.sessions() as session:
        return auth.create_token(session, f"t-{role}", role, created_by="test")["token"]


def _requests(app: Flask) -> list[tuple[str, str, dict[str, Any]]]:
    reader = _token(app, "reader")
    deep = "[" * 5000 + "]" * 5000
    return [
        ("tutorial", "/predict", {"data": json.dumps(TUTORIAL), "headers": JSON}),
        ("records", "/models/iris/1/predict", {"json": [SETOSA, SETOSA]}),
        ("rows by alias", "/models/iris/production/predict", {"json": {"inputs": [[1, 2, 3, 4]]}}),
        ("latest v-form", "/models/iris/v1/predict", {"json": SETOSA}),
        ("json suffix type", "/predict", {"data": json.dumps(SETOSA),
                                          "headers": {"Content-Type": "application/vnd.x+json; charset=utf-8"}}),
        ("proba unsupported", "/predict?proba=true", {"json": SETOSA}),
        ("proba not a flag", "/predict?proba=maybe", {"json": SETOSA}),
        ("proba off", "/predict?proba=0&x=1", {"json": SETOSA}),
        ("text body", "/predict", {"data": "5.1,3.5", "headers": {"Content-Type": "text/plain"}}),
        ("no content type", "/predict", {"data": json.dumps(SETOSA)}),
        ("malformed", "/predict", {"data": "{nope", "headers": JSON}),
        ("empty body", "/predict", {"data": "", "headers": JSON}),
        ("too deep", "/predict", {"data": deep, "headers": JSON}),
        ("too large", "/predict", {"data": json.dumps({"inputs": [[1.0, 2.0, 3.0, 4.0]] * 400}), "headers": JSON}),
        ("too many rows", "/predict", {"json": {"inputs": [[1, 2, 3, 4]] * 6}}),
        ("missing feature", "/predict", {"json": {"sepal.length": 1}}),
        ("boolean", "/predict", {"json": {**SETOSA, "petal.width": True}}),
        ("unknown model", "/models/nope/1/predict", {"json": SETOSA}),
        ("no ref", "/models/iris/predict", {"json": SETOSA}),
        ("no ref, unknown model", "/models/nope/predict", {"json": SETOSA}),
        ("unknown model, malformed body", "/models/nope/1/predict", {"data": "{", "headers": JSON}),
        ("unknown version", "/models/iris/9/predict", {"json": SETOSA}),
        ("unknown alias", "/models/iris/staging/predict", {"json": SETOSA}),
        ("a registry word as ref", "/models/iris/versions/predict", {"json": SETOSA}),
        ("non-ascii name", "/models/%C3%A9t%C3%A9/1/predict", {"json": SETOSA}),
        ("bad scheme", "/predict", {"json": SETOSA, "headers": {"Authorization": "Basic abc"}}),
        ("unknown token", "/predict", {"json": SETOSA, "headers": {"Authorization": "Bearer myd_nope"}}),
        ("reader token", "/predict", {"json": SETOSA, "headers": {"Authorization": f"Bearer {reader}"}}),
        ("reader token, bad body", "/predict", {"data": "{", "headers": {**JSON, "Authorization": f"Bearer {reader}"}}),
    ]


@pytest.fixture
def small_app(config: dict[str, Any]) -> Iterator[Flask]:
    app = create_app({**config, "serving": {"max_body_bytes": 10_000, "max_rows": 5}})
    yield app
    app.extensions[EXTENSION].engine.dispose()


def _seen(response: Any) -> tuple[int, str | None, Any, str | None]:
    return (response.status_code, response.content_type, response.get_json(silent=True),
            response.headers.get("WWW-Authenticate"))


def test_the_lane_answers_as_the_flask_views_do(small_app: Flask) -> None:
    requests = _requests(small_app)
    client = small_app.test_client()
    via_lane = {name: _seen(client.post(url, **kwargs)) for name, url, kwargs in requests}
    with flask_only(small_app):
        via_flask = {name: _seen(client.post(url, **kwargs)) for name, url, kwargs in requests}
    for name, _url, _kwargs in requests:
        assert via_lane[name] == via_flask[name], name
    statuses = {name: seen[0] for name, seen in via_lane.items()}
    assert statuses == {
        "tutorial": 200, "records": 200, "rows by alias": 200, "latest v-form": 200, "json suffix type": 200,
        "proba unsupported": 422, "proba not a flag": 422, "proba off": 200, "text body": 415,
        "no content type": 415, "malformed": 400, "empty body": 400, "too deep": 422, "too large": 413,
        "too many rows": 413, "missing feature": 422, "boolean": 422, "unknown model": 404,
        "no ref": 200, "no ref, unknown model": 404, "unknown model, malformed body": 400, "unknown version": 404,
        "unknown alias": 404,
        "a registry word as ref": 404, "non-ascii name": 404, "bad scheme": 401, "unknown token": 401,
        "reader token": 403, "reader token, bad body": 403,
    }
    assert via_lane["tutorial"][2] == {"model": "iris", "version": 1, "predictions": [0], "labels": ["setosa"],
                                       "target_value": 0}
    assert via_lane["non-ascii name"][2]["message"] == "model 'été' not found"
    assert via_lane["bad scheme"][3] == 'Bearer realm="modelyard"'
    for seen in via_lane.values():
        assert seen[1] == "application/json"
        assert set(seen[2]) >= ({"model", "version", "predictions"} if seen[0] == 200 else {"code", "status",
                                                                                            "message"})


def test_anonymous_role_none_is_401_in_the_lane(config: dict[str, Any]) -> None:
    app = create_app({**config, "auth": {**config["auth"], "anonymous_role": "none"}})
    try:
        response = app.test_client().post("/predict", json=SETOSA)
        assert response.status_code == 401
        assert response.json["message"] == ("this needs a token with role predictor or above; "
                                            "send it as 'Authorization: Bearer <token>'")
    finally:
        app.extensions[EXTENSION].engine.dispose()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_flasks_405(anon: FlaskClient, method: str) -> None:
    for url in ("/predict", "/models/iris/1/predict"):
        response = anon.open(url, method=method, json=SETOSA)
        assert response.status_code == 405
        assert response.json["code"] == 405
        assert "POST" in response.headers["Allow"]


def test_options_lists_post(anon: FlaskClient) -> None:
    response = anon.options("/models/iris/1/predict")
    assert response.status_code == 200
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize("path", ["/predict/", "/models/iris/1/predict/", "/models//1/predict", "/models/iris//predict",
                                  "/models/iris/1/2/predict", "/models//predict", "/predictx", "/x/predict"])
def test_other_paths_are_not_the_lanes(anon: FlaskClient, path: str) -> None:
    assert match(path) is None
    with flask_only(anon.application):
        expected = anon.post(path, json=SETOSA)
    response = anon.post(path, json=SETOSA)
    assert (response.status_code, response.json) == (expected.status_code, expected.json)
    assert response.status_code in (404, 405, 308)


def test_an_unexpected_error_is_a_json_500_and_logged(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    rt = app.extensions[EXTENSION]

    def broken(*_args: Any) -> Any:
        raise RuntimeError("boom")

    rt.predictor.refs.resolve = broken
    response = app.test_client().post("/predict", json=SETOSA)
    assert response.status_code == 500
    assert response.json == {"code": 500, "status": "Internal Server Error", "message": "internal server error"}
    assert "boom" not in response.get_data(as_text=True)
    assert any(record.exc_info and "boom" in str(record.exc_info[1]) for record in caplog.records)


def test_the_lane_counts_its_requests(client: FlaskClient) -> None:
    def count(text: str, line_start: str) -> float:
        for line in text.splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    predicts = 'modelyard_predict_requests_total{model="iris",status="200",version="1"}'
    requests = 'modelyard_http_requests_total{endpoint="serving.predict_default",method="POST",status="415"}'
    seconds = 'modelyard_predict_duration_seconds_count{model="iris",status="200",version="1"}'
    before = client.get("/metrics").get_data(as_text=True)
    for _ in range(3):
        assert client.post("/predict", json=SETOSA).status_code == 200
    assert client.post("/predict", data="x", headers={"Content-Type": "text/plain"}).status_code == 415
    after = client.get("/metrics").get_data(as_text=True)
    assert count(after, predicts) - count(before, predicts) == 3
    assert count(after, seconds) - count(before, seconds) == 3
    assert count(after, requests) - count(before, requests) == 1


def test_the_request_session_is_closed(app: Flask, client: FlaskClient) -> None:
    engine = app.extensions[EXTENSION].engine
    assert client.post("/predict", json=SETOSA).status_code == 200
    held = engine.pool.checkedout()  # the ref cache keeps one connection for its generation reads
    for _ in range(30):  # a token lookup per request: none may keep its connection checked out
        assert client.post("/predict", json=SETOSA).status_code == 200
    assert engine.pool.checkedout() == held <= 1


def test_a_body_shorter_than_its_length_is_a_json_400(app: Flask) -> None:
    body = json.dumps(SETOSA).encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "QUERY_STRING": "", "SERVER_NAME": "x",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "CONTENT_TYPE": "application/json",
               "CONTENT_LENGTH": str(len(body) + 50), "wsgi.input": io.BytesIO(body)}
    seen: list[Any] = []
    answer = b"".join(app.wsgi_app(environ, lambda status, headers: seen.append((status, dict(headers)))))
    assert seen[0][0] == "400 Bad Request"
    assert seen[0][1]["Content-Type"] == "application/json"
    assert json.loads(answer)["code"] == 400


def test_every_server_thread_predicts_with_assume_finite(app: Flask) -> None:
    """scikit-learn's config is per thread: a thread that never set it would scan every input."""
    seen: list[bool] = []

    def predict_in_a_new_thread() -> None:
        assert app.test_client().post("/predict", json=SETOSA).status_code == 200
        seen.append(sklearn.get_config()["assume_finite"])

    thread = threading.Thread(target=predict_in_a_new_thread)
    thread.start()
    thread.join(30)
    assert seen == [True]


def test_the_route_table_names_the_endpoints_flask_routes_to(app: Flask) -> None:
    """The lane answers in front of Flask under the names Flask's own router gives the same
    requests: metrics, auth marks and the OpenAPI views agree on one endpoint."""
    from modelyard.serving.routes import match

    adapter = app.url_map.bind("localhost")
    for path in ("/predict", "/models/iris/production/predict", "/models/iris/3/predict", "/models/iris/predict",
                 "/invocations", "/models/iris/3/invocations", "/v2/models/iris/infer",
                 "/v2/models/iris/versions/production/infer"):
        route = match(path)
        assert route is not None
        endpoint, arguments = adapter.match(path, method="POST")
        assert endpoint == route.endpoint
        assert arguments.get("name") == route.name and arguments.get("ref", route.ref) == route.ref
    assert match("/models/iris/predict") == ("serving.predict_model", "iris", "production", "native")
    assert match("/v2/models/iris/versions/2/infer") == ("v2.infer_version", "iris", "2", "v2")
    for other in ("/models/iris/invocations", "/v2/models/iris/versions/infer", "/v2/models//infer",
                  "/v2/models/iris/other/2/infer", "/v2/models/iris/infer/x"):
        assert match(other) is None, other
    assert match("/models//predict") is None and match("/predictions") is None
