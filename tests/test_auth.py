"""Tokens and roles: who may do what, what a refusal looks like, and that a token is never seen
again after its creation."""

from __future__ import annotations

import io
import logging
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from modelyard.app import create_app
from tests.conftest import admin_client
from tests.factories import fitted_logreg

SETOSA = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}


def _token(client: FlaskClient, name: str, role: str) -> str:
    response = client.post("/tokens", json={"name": name, "role": role})
    assert response.status_code == 201, response.json
    return response.json["token"]


def _as(app: Flask, token: str | None) -> FlaskClient:
    c = app.test_client()
    if token:
        c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return c


def _upload(c: FlaskClient, name: str = "flowers") -> Any:
    return c.post(f"/models/{name}/versions", data={"file": (io.BytesIO(pickle.dumps(fitted_logreg())), "m.pkl")},
                  content_type="multipart/form-data")


def test_anonymous_may_read_and_predict_by_default(anon: FlaskClient) -> None:
    assert anon.post("/predict", json=SETOSA).status_code == 200
    assert anon.get("/models").status_code == 200
    assert anon.get("/models/iris/versions/1").status_code == 200
    assert anon.get("/models/iris/aliases").status_code == 200


@pytest.mark.parametrize("url, what", [
    ("/models/iris/versions/1/artifact", "downloading a model file"),
    ("/models/iris/events", "reading the audit log"),
    ("/metrics", "reading the metrics"),
])
def test_files_events_and_metrics_need_a_token_by_default(anon: FlaskClient, client: FlaskClient,
                                                           url: str, what: str) -> None:
    response = anon.get(url)
    assert response.status_code == 401
    assert response.json["message"].startswith(f"{what} needs a token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    reader = client.post("/tokens", json={"name": "dashboards", "role": "reader"}).json["token"]
    assert anon.get(url, headers={"Authorization": f"Bearer {reader}"}).status_code == 200


def test_private_reads_can_be_opened_to_the_anonymous_role(config: dict[str, Any]) -> None:
    anon = create_app({**config, "auth": {**config["auth"], "private_reads": ["metrics"]}}).test_client()
    assert anon.get("/models/iris/versions/1/artifact").status_code == 200
    assert anon.get("/models/iris/events").status_code == 200
    assert anon.get("/metrics").status_code == 401


def test_unknown_private_reads_stop_the_start(config: dict[str, Any]) -> None:
    from modelyard.config import ConfigError

    with pytest.raises(ConfigError, match=r"\[auth\] private_reads: unknown 'models'"):
        create_app({**config, "auth": {**config["auth"], "private_reads": ["models"]}})


@pytest.mark.parametrize(
    "method, url, kwargs",
    [
        ("post", "/models", {"json": {"name": "x"}}),
        ("patch", "/models/iris", {"json": {"description": "x"}}),
        ("delete", "/models/iris", {}),
        ("delete", "/models/iris/versions/1", {}),
        ("put", "/models/iris/aliases/staging", {"json": {"version": 1}}),
        ("post", "/models/iris/versions/1/promote", {}),
        ("post", "/models/iris/aliases/production/rollback", {}),
        ("get", "/tokens", {}),
        ("post", "/tokens", {"json": {"name": "x", "role": "admin"}}),
    ],
)
def test_anonymous_writes_are_401(anon: FlaskClient, method: str, url: str, kwargs: dict[str, Any]) -> None:
    response = getattr(anon, method)(url, **kwargs)
    assert response.status_code == 401
    assert response.json["code"] == 401 and "token" in response.json["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_anonymous_upload_is_401(anon: FlaskClient) -> None:
    assert _upload(anon).status_code == 401


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer ", "Basic dXNlcjpwYXNz", "token", "Bearer myd_" + "x" * 43])
def test_bad_credentials_are_401_even_where_anonymous_would_do(app: Flask, header: str) -> None:
    c = app.test_client()
    response = c.post("/predict", json=SETOSA, headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json["code"] == 401


def test_roles_are_ordered(client: FlaskClient, app: Flask) -> None:
    reader = _as(app, _token(client, "r", "reader"))
    predictor = _as(app, _token(client, "p", "predictor"))
    uploader = _as(app, _token(client, "u", "uploader"))
    promoter = _as(app, _token(client, "pr", "promoter"))

    assert reader.get("/models/iris").status_code == 200
    response = reader.post("/predict", json=SETOSA)
    assert response.status_code == 403
    assert response.json["message"] == "this needs role predictor or above; token 'r' has role reader"

    assert predictor.post("/predict", json=SETOSA).status_code == 200
    assert _upload(predictor).status_code == 403

    assert _upload(uploader).status_code == 201
    assert uploader.put("/models/flowers/aliases/staging", json={"version": 1}).status_code == 200
    assert uploader.delete("/models/flowers/versions/1").status_code == 403
    assert uploader.get("/tokens").status_code == 403

    assert promoter.delete("/models/flowers/aliases/staging").status_code == 204
    assert promoter.delete("/models/flowers/versions/1").status_code == 204
    assert promoter.delete("/models/flowers").status_code == 403
    assert promoter.get("/tokens").status_code == 403


def test_protected_aliases_move_only_with_promoter(client: FlaskClient, app: Flask) -> None:
    uploader = _as(app, _token(client, "u", "uploader"))
    promoter = _as(app, _token(client, "pr", "promoter"))
    assert _upload(uploader, "iris").status_code == 201
    response = uploader.post("/models/iris/versions/2/promote")
    assert response.status_code == 403
    assert "protected alias 'production'" in response.json["message"]
    assert uploader.put("/models/iris/aliases/production", json={"version": 2}).status_code == 403
    assert uploader.delete("/models/iris/aliases/production").status_code == 403
    assert uploader.post("/models/iris/versions/2/promote", json={"alias": "canary"}).status_code == 200
    assert promoter.post("/models/iris/versions/2/promote").status_code == 200
    assert uploader.post("/models/iris/aliases/production/rollback").status_code == 403
    assert promoter.post("/models/iris/aliases/production/rollback").json["version"] == 1


@pytest.mark.parametrize("method, url, kwargs", [
    ("post", "/models/iris/versions/1/promote", {}),
    ("post", "/models/iris/versions/1/promote", {"json": {"alias": "production"}}),
    ("put", "/models/iris/aliases/production", {"json": {"version": 1}}),
    ("delete", "/models/iris/aliases/production", {}),
    ("post", "/models/iris/aliases/production/rollback", {}),
])
def test_a_protected_alias_refusal_names_the_role_it_needs_and_how_to_send_it(
        anon: FlaskClient, client: FlaskClient, app: Flask, method: str, url: str, kwargs: dict[str, Any]) -> None:
    needs = "moving the protected alias 'production' needs"
    response = getattr(anon, method)(url, **kwargs)
    assert response.status_code == 401
    assert response.json["message"] == (f"{needs} a token with role promoter or above; "
                                        "send it as 'Authorization: Bearer <token>'")
    uploader = _as(app, _token(client, "u", "uploader"))
    response = getattr(uploader, method)(url, **kwargs)
    assert response.status_code == 403
    assert response.json["message"] == f"{needs} role promoter or above; token 'u' has role uploader"


def test_an_unprotected_alias_refusal_names_uploader(anon: FlaskClient) -> None:
    response = anon.post("/models/iris/versions/1/promote", json={"alias": "staging"})
    assert response.status_code == 401
    assert response.json["message"] == ("this needs a token with role uploader or above; "
                                        "send it as 'Authorization: Bearer <token>'")


def test_audit_log_records_the_token_name(client: FlaskClient, app: Flask) -> None:
    ci = _as(app, _token(client, "ci-bot", "promoter"))
    assert _upload(ci, "iris").status_code == 201
    ci.post("/models/iris/versions/2/promote")
    actors = [(e["action"], e["actor"]) for e in client.get("/models/iris/events").json[:2]]
    assert actors == [("alias.moved", "ci-bot"), ("version.created", "ci-bot")]


def test_token_lifecycle(client: FlaskClient, app: Flask) -> None:
    created = client.post("/tokens", json={"name": "ci", "role": "uploader"})
    assert created.status_code == 201
    body = created.json
    assert body["name"] == "ci" and body["role"] == "uploader" and body["token"].startswith("myd_")
    assert body["created_by"] == "admin"
    listed = client.get("/tokens").json
    assert {t["name"]: t["role"] for t in listed} == {"admin": "admin", "ci": "uploader"}
    assert all("token" not in t for t in listed)
    ci = _as(app, body["token"])
    assert _upload(ci).status_code == 201
    assert client.delete("/tokens/ci").status_code == 204
    assert _upload(ci).status_code == 401
    assert client.delete("/tokens/ci").status_code == 404


@pytest.mark.parametrize(
    "body, status",
    [({"name": "x"}, 422), ({"name": "x", "role": "root"}, 422), ({"name": "bad name", "role": "reader"}, 422),
     ({"name": "admin", "role": "reader"}, 409)],
)
def test_token_creation_errors(client: FlaskClient, body: dict[str, Any], status: int) -> None:
    assert client.post("/tokens", json=body).status_code == status


def test_anonymous_role_none_closes_everything_but_operations(config: dict[str, Any]) -> None:
    app = create_app({**config, "auth": {**config["auth"], "anonymous_role": "none"}})
    c = app.test_client()
    assert c.post("/predict", json=SETOSA).status_code == 401
    assert c.get("/models").status_code == 401
    for url in ("/healthz", "/readyz", "/info", "/openapi.json", "/docs"):
        assert c.get(url).status_code == 200, url
    assert admin_client(app).post("/predict", json=SETOSA).status_code == 200


@pytest.mark.parametrize("anonymous_role, status", [("reader", 401), ("predictor", 200), ("uploader", 200)])
def test_every_predict_route_answers_the_anonymous_role(config: dict[str, Any], anonymous_role: str,
                                                        status: int) -> None:
    """The predict lane decides a request without a token once, when it is built: the same answer
    as authorize's on each route, for a role below predictor and at or above it."""
    app = create_app({**config, "auth": {**config["auth"], "anonymous_role": anonymous_role}})
    c = app.test_client()
    v2 = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": list(SETOSA.values())}]}
    for url, body in (("/predict", SETOSA), ("/models/iris/1/predict", SETOSA), ("/models/iris/production/predict",
                      SETOSA), ("/v2/models/iris/infer", v2), ("/invocations", {"dataframe_records": [SETOSA]})):
        response = c.post(url, json=body)
        assert response.status_code == status, (url, response.json)
        assert response.is_json
    assert c.get("/models").status_code == 200
    assert admin_client(app).post("/predict", json=SETOSA).status_code == 200


def test_routing_errors_come_before_auth(anon: FlaskClient) -> None:
    assert anon.get("/nowhere").status_code == 404
    assert anon.put("/models").status_code == 405


def test_auth_comes_before_the_body(anon: FlaskClient, config: dict[str, Any]) -> None:
    assert anon.post("/models/x/versions", json={}).status_code == 401  # not 415
    assert anon.post("/models", data="{", content_type="application/json").status_code == 401  # not 400


def test_admin_token_file_is_private_and_written_once(config: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    path = Path(config["auth"]["admin_token_file"])
    with caplog.at_level(logging.INFO):
        create_app(config)
    token = path.read_text().strip()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert str(path) in caplog.text and token not in caplog.text
    create_app(config)
    assert path.read_text().strip() == token


def test_a_token_never_appears_in_logs_or_later_responses(config: dict[str, Any],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    app = create_app({**config, "database": {**config["database"], "echo": True}, "logging": {"level": "DEBUG"}})
    admin = admin_client(app)
    admin_token = Path(config["auth"]["admin_token_file"]).read_text().strip()
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        created = admin.post("/tokens", json={"name": "ci", "role": "promoter"})
        token = created.json["token"]
        ci = _as(app, token)
        for response in (
            _upload(ci, "iris"), ci.post("/models/iris/versions/2/promote"), ci.get("/models/iris/events"),
            admin.get("/tokens"), ci.get("/models/iris"), ci.post("/predict", json=SETOSA),
            ci.get("/tokens"), _as(app, token + "x").get("/models"), admin.delete("/tokens/ci"),
            ci.get("/models"), admin.get("/openapi.json"), admin.get("/info"),
        ):
            seen.append(response.get_data(as_text=True) + str(response.headers))
    for secret in (token, admin_token):
        assert secret not in caplog.text
        assert not any(secret in text for text in seen)


def test_cli_token_commands(config: dict[str, Any], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env["MODELYARD_DATABASE_URL"] = config["database"]["url"]
    env["MODELYARD_AUTH_ADMIN_TOKEN_FILE"] = config["auth"]["admin_token_file"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "modelyard.cli", "token", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    created = cli("create", "--name", "deploy", "--role", "promoter")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("myd_") and created.stderr == ""
    listed = cli("list")
    assert "deploy\tpromoter" in listed.stdout and token not in listed.stdout
    assert cli("create", "--name", "deploy", "--role", "reader").returncode == 1
    app = create_app(config)
    assert _as(app, token).post("/models/iris/versions/1/promote").status_code == 200
    assert cli("revoke", "--name", "deploy").returncode == 0
    assert _as(app, token).get("/models").status_code == 401


def test_tokens_are_stored_as_their_sha256_only(client: FlaskClient, app: Flask) -> None:
    import hashlib

    from sqlalchemy import text

    from modelyard.web.context import EXTENSION

    token = client.post("/tokens", json={"name": "ci", "role": "uploader"}).json["token"]
    engine = app.extensions[EXTENSION].engine
    with engine.connect() as conn:
        rows = [tuple(map(str, row)) for row in conn.execute(text("SELECT * FROM tokens"))]
    stored = next(row for row in rows if "ci" in row)
    assert hashlib.sha256(token.encode()).hexdigest() in stored
    assert not any(token in value or token[8:40] in value for row in rows for value in row)
