from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from modelyard import __version__
from modelyard.app import create_app
from modelyard.web.context import EXTENSION
from tests.conftest import admin_client


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_when_ready(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["status"] == "ready"
    assert response.json["checks"]["database"] == "ok"
    assert "iris version 1" in response.json["checks"]["default_model"]


def test_readyz_without_the_default_model_is_503(config: dict[str, Any]) -> None:
    app = create_app({**config, "serving": {"seed": False}})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["status"] == "unavailable"
    assert "model 'iris' not found" in response.json["checks"]["default_model"]


def test_readyz_with_the_sqlite_file_gone_is_503(tmp_path: Any) -> None:
    """SQLite only, by what it does (the file turned into a directory); PostgreSQL out of reach is
    test_a_postgresql_out_of_reach_is_503_and_recovered_from."""
    from tests.conftest import config_in

    app = create_app(config_in(tmp_path))
    app.extensions[EXTENSION].engine.dispose()  # drop pooled connections to the old file
    db = tmp_path / "registry.db"
    for path in tmp_path.glob("registry.db*"):
        path.unlink()
    db.mkdir()  # the database path is now a directory: SQLite cannot open it
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["database"].startswith("unavailable")


def test_info(client: FlaskClient) -> None:
    body = client.get("/info").json
    assert body["name"] == "modelyard"
    assert body["version"] == __version__
    assert body["default_model"] == "iris"
    assert body["limits"] == {"max_body_bytes": 16777216, "max_rows": 10000, "upload_max_bytes": 268435456}


def test_openapi_lists_every_route(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    assert spec["info"]["title"] == "modelyard"
    assert set(spec["paths"]) >= {
        "/models", "/models/{name}", "/models/{name}/versions", "/models/{name}/versions/{ref}",
        "/models/{name}/aliases", "/models/{name}/{ref}/predict", "/predict",
        "/healthz", "/readyz", "/info",
    }
    assert "requestBody" in spec["paths"]["/predict"]["post"]


def test_interactive_docs_work_without_internet(anon: FlaskClient) -> None:
    import re

    response = anon.get("/docs")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "swagger-ui" in page.lower()
    assert re.findall(r"(?:src|href)=\"(https?:)?//", page) == []  # no asset from another host
    assets = re.findall(r"(?:src|href)=\"([^\"]+)\"", page)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(assets)
    for asset in assets:
        served = anon.get(asset)
        assert served.status_code == 200, asset
        assert len(served.data) > 1000
    assert anon.get("/docs/assets/../../etc/passwd").status_code == 404


def test_the_root_leads_to_the_docs(anon: FlaskClient) -> None:
    response = anon.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/docs")


def test_the_openapi_document_validates_and_declares_auth_and_the_upload(anon: FlaskClient) -> None:
    from openapi_spec_validator import validate

    spec = anon.get("/openapi.json").json
    validate(spec)
    bearer = spec["components"]["securitySchemes"]["bearer"]
    assert bearer == {"type": "http", "scheme": "bearer", "description": bearer["description"]}
    assert {"bearer": []} in spec["security"]
    upload = spec["paths"]["/models/{name}/versions"]["post"]
    assert "parameters" not in upload or all(p["in"] != "formData" for p in upload["parameters"])
    body = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    schema = spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert schema["properties"]["file"] == {"type": "string", "format": "binary",
                                           "description": "The model file: pickle, joblib or skops"}
    assert {"format", "labels", "features", "example", "metadata"} <= set(schema["properties"])
    assert schema["required"] == ["file"]


def test_unexpected_errors_are_json_500_without_traceback(config: dict[str, Any]) -> None:
    app = create_app(config)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    response = admin_client(app).get("/boom")
    assert response.status_code == 500
    assert response.json == {"code": 500, "status": "Internal Server Error", "message": "internal server error"}


def test_metrics_count_predictions_cache_and_uploads(client: FlaskClient) -> None:
    import io
    import pickle

    from tests.factories import fitted_logreg

    def value(text: str, name: str) -> float:
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = client.get("/metrics").get_data(as_text=True)
    body = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}
    for _ in range(3):
        client.post("/predict", json=body)
    client.post("/models/iris/9/predict", json=body)
    client.post("/models/up/versions", data={"file": (io.BytesIO(pickle.dumps(fitted_logreg())), "m.pkl")},
                content_type="multipart/form-data")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    after = response.get_data(as_text=True)
    ok = 'modelyard_predict_requests_total{model="iris",status="200",version="1"}'
    assert value(after, ok) - value(before, ok) == 3
    missing = 'modelyard_predict_requests_total{model="",status="404",version=""}'
    assert value(after, missing) - value(before, missing) == 1
    assert value(after, "modelyard_cache_hits_total") - value(before, "modelyard_cache_hits_total") >= 3
    assert value(after, 'modelyard_uploads_total{status="201"}') - value(before,
                                                                         'modelyard_uploads_total{status="201"}') == 1
    assert 'modelyard_predict_duration_seconds_bucket{le="0.5",model="iris",status="200",version="1"}' in after


def test_request_metrics_count_every_label_set_past_the_bound_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """metrics.observe's flush keeps the metric children of recent label sets; dropping them
    when the cache is full loses no count."""
    from prometheus_client import REGISTRY

    from modelyard import metrics
    from modelyard.web.context import Observation

    monkeypatch.setattr(metrics, "_MAX_BOUND", 3)
    monkeypatch.setattr(metrics, "_bound", {})
    sets = [(f"bound-{i}", str(v)) for i in range(4) for v in (1, 2)]

    def count(model: str, version: str) -> float:
        return REGISTRY.get_sample_value("modelyard_predict_requests_total",
                                         {"model": model, "version": version, "status": "200"}) or 0.0

    before = {labels: count(*labels) for labels in sets}
    for _ in range(3):
        for model, version in sets:
            metrics.observe(Observation("serving.predict", "POST", 200, 0.001, "predict", model, version))
            metrics.flush()
    assert len(metrics._bound) <= 3
    assert all(count(*labels) - before[labels] == 3 for labels in sets)


class _Proxy:
    """A TCP relay on a loopback port to the real PostgreSQL: stopping it leaves the port closed
    (the database unreachable for whoever points there) without touching the shared server."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket

        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._sockets: list[Any] = []
        self._listener: Any = None

    def start(self) -> None:
        import socket
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        import socket

        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept a close alone would leave blocked
        except OSError:
            pass
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._sockets.clear()

    def _accept(self, listener: Any) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass


def test_a_postgresql_out_of_reach_is_503_and_recovered_from(tmp_path: Any, pg_url: str) -> None:
    """readyz and every route answer a JSON 503 while the database cannot be reached (its port
    closed), and 200 again, with no restart, once it can."""
    from tests.conftest import config_in

    proxy = _Proxy(("127.0.0.1", 5432))
    proxy.start()
    url = pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
    app = create_app(config_in(tmp_path, database={"url": url, "connect_timeout": 2}))
    client, probe = admin_client(app), app.test_client()  # a load balancer's probe sends no token
    setosa = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}
    try:
        assert probe.get("/readyz").status_code == 200
        assert client.post("/predict", json=setosa).status_code == 200
        proxy.stop()
        ready = probe.get("/readyz")
        assert ready.status_code == 503, ready.json
        assert ready.json["checks"]["database"].startswith("unavailable"), ready.json
        for response in (client.post("/predict", json=setosa), client.get("/models"),
                         client.post("/models/iris/versions/1/promote")):
            assert response.status_code == 503, response.data
            assert response.json == {"code": 503, "status": "Service Unavailable",
                                     "message": "the registry database is unavailable; try again"}
        proxy.start()
        assert probe.get("/readyz").status_code == 200
        assert client.post("/predict", json=setosa).json["predictions"] == [0]
        assert client.get("/models").status_code == 200
    finally:
        proxy.stop()
        app.extensions[EXTENSION].engine.dispose()
