"""Models, versions and aliases through their whole life: create, update, promote, roll back,
delete, with the audit log and the serving side watching."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from flask.testing import FlaskClient

from modelyard.serving.service import cache_key
from modelyard.web.context import Runtime
from tests.factories import make_version

SETOSA = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}


def _events(client: FlaskClient, name: str) -> list[dict[str, Any]]:
    return client.get(f"/models/{name}/events?page_size=100").json


# --- models ------------------------------------------------------------------------------------


def test_create_model(client: FlaskClient) -> None:
    response = client.post("/models", json={"name": "flowers", "description": "d", "tags": {"team": "a"}})
    assert response.status_code == 201
    assert response.headers["Location"].endswith("/models/flowers")
    assert response.json["name"] == "flowers" and response.json["tags"] == {"team": "a"}
    assert response.json["latest_version"] is None and response.json["version_count"] == 0


def test_create_existing_model_is_409(client: FlaskClient) -> None:
    response = client.post("/models", json={"name": "iris"})
    assert response.status_code == 409
    assert response.json["message"] == "model 'iris' already exists"


@pytest.mark.parametrize(
    "body, status",
    [({}, 422), ({"name": ""}, 422), ({"name": "bad name"}, 422), ({"name": "x", "tags": {"a": 1}}, 422),
     ({"name": "x", "tags": ["a"]}, 422), ({"name": "x", "extra": 1}, 422), ({"name": 5}, 422)],
)
def test_create_model_bad_body(client: FlaskClient, body: dict[str, Any], status: int) -> None:
    response = client.post("/models", json=body)
    assert response.status_code == status
    assert response.json["code"] == status


def test_create_model_needs_json(client: FlaskClient) -> None:
    assert client.post("/models", data="name=x", content_type="application/x-www-form-urlencoded").status_code == 415
    assert client.post("/models", data="{", content_type="application/json").status_code == 400


def test_patch_model(client: FlaskClient) -> None:
    response = client.patch("/models/iris", json={"description": "new", "tags": {"k": "v"}})
    assert response.status_code == 200
    assert response.json["description"] == "new" and response.json["tags"] == {"k": "v"}
    event = _events(client, "iris")[0]
    assert event["action"] == "model.updated"
    assert event["after"] == {"description": "new", "tags": {"k": "v"}}
    assert event["before"]["tags"] == {}


@pytest.mark.parametrize("body", [{}, {"name": "other"}, {"tags": "x"}, {"description": 3}])
def test_patch_model_bad_body_is_422(client: FlaskClient, body: dict[str, Any]) -> None:
    assert client.patch("/models/iris", json=body).status_code == 422


def test_patch_unknown_model_is_404(client: FlaskClient) -> None:
    assert client.patch("/models/nope", json={"description": "x"}).status_code == 404


def test_delete_model_removes_rows_artifacts_and_cache(client: FlaskClient, runtime: Runtime) -> None:
    version = make_version(runtime, "flowers", alias="production")
    assert client.post("/models/flowers/production/predict", json=SETOSA).status_code == 200
    key = cache_key("flowers", 1, version.sha256)
    assert runtime.predictor.cache.peek(key) is not None
    assert client.delete("/models/flowers").status_code == 204
    assert client.get("/models/flowers").status_code == 404
    assert client.post("/models/flowers/production/predict", json=SETOSA).status_code == 404
    assert runtime.predictor.cache.peek(key) is None
    assert not runtime.store.exists(version.sha256)
    assert _events(client, "flowers")[0]["action"] == "model.deleted"
    assert _events(client, "flowers")[0]["before"] == {"versions": [1], "aliases": {"production": 1}}


def test_delete_unknown_model_is_404(client: FlaskClient) -> None:
    assert client.delete("/models/nope").status_code == 404


def test_a_recreated_model_starts_again_at_version_1(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers")
    make_version(runtime, "flowers")
    client.delete("/models/flowers")
    assert make_version(runtime, "flowers").version == 1


# --- versions ----------------------------------------------------------------------------------


def test_patch_version_description_and_tags_only(client: FlaskClient) -> None:
    response = client.patch("/models/iris/versions/production", json={"description": "seed", "tags": {"a": "b"}})
    assert response.status_code == 200
    assert response.json["description"] == "seed" and response.json["tags"] == {"a": "b"}
    assert client.patch("/models/iris/versions/1", json={"estimator": "x"}).status_code == 422
    assert client.patch("/models/iris/versions/1", json={"sha256": "0" * 64}).status_code == 422
    assert _events(client, "iris")[0]["action"] == "version.updated"


def test_delete_version_with_alias_is_409(client: FlaskClient) -> None:
    response = client.delete("/models/iris/versions/1")
    assert response.status_code == 409
    assert response.json["errors"] == {"aliases": ["production"]}
    assert client.get("/models/iris/versions/1").status_code == 200


def test_delete_version(client: FlaskClient, runtime: Runtime) -> None:
    first = make_version(runtime, "flowers")
    make_version(runtime, "flowers")
    client.post("/models/flowers/1/predict", json=SETOSA)
    assert client.delete("/models/flowers/versions/1").status_code == 204
    assert client.get("/models/flowers/versions/1").status_code == 404
    assert runtime.predictor.cache.peek(cache_key("flowers", 1, first.sha256)) is None
    assert runtime.store.exists(first.sha256)  # version 2 holds the same bytes
    assert [v["version"] for v in client.get("/models/flowers/versions").json] == [2]


def test_version_numbers_are_never_reused(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers")
    make_version(runtime, "flowers")
    assert client.delete("/models/flowers/versions/2").status_code == 204
    assert make_version(runtime, "flowers").version == 3


def test_delete_unknown_version_is_404(client: FlaskClient) -> None:
    assert client.delete("/models/iris/versions/9").status_code == 404


def test_artifact_download_with_etag(client: FlaskClient, runtime: Runtime) -> None:
    detail = client.get("/models/iris/versions/1").json
    response = client.get("/models/iris/versions/production/artifact")
    assert response.status_code == 200
    assert response.content_type == "application/octet-stream"
    assert response.headers["ETag"] == f'"{detail["sha256"]}"'
    assert response.headers["Content-Disposition"] == 'attachment; filename="iris-v1.pkl"'
    assert response.data == runtime.store.open(detail["sha256"])
    assert pickle.loads(response.data).predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]


@pytest.mark.parametrize("header, status", [('"{sha}"', 304), ('W/"x", "{sha}"', 304), ("*", 304), ('"other"', 200)])
def test_artifact_if_none_match(client: FlaskClient, header: str, status: int) -> None:
    sha = client.get("/models/iris/versions/1").json["sha256"]
    response = client.get("/models/iris/versions/1/artifact", headers={"If-None-Match": header.format(sha=sha)})
    assert response.status_code == status
    assert response.headers["ETag"] == f'"{sha}"'
    if status == 304:
        assert response.data == b""


def test_artifact_of_unknown_version_is_404(client: FlaskClient) -> None:
    assert client.get("/models/iris/versions/5/artifact").status_code == 404


# --- aliases, promote, rollback ----------------------------------------------------------------


def test_put_alias_creates_then_moves(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "iris")
    response = client.put("/models/iris/aliases/staging", json={"version": 2})
    assert response.status_code == 200
    assert response.json == {"alias": "staging", "version": 2, "previous_version": None}
    response = client.put("/models/iris/aliases/staging", json={"version": "v1"})
    assert response.json == {"alias": "staging", "version": 1, "previous_version": 2}
    assert client.get("/models/iris/aliases").json == {"production": 1, "staging": 1}


@pytest.mark.parametrize("alias", ["latest", "LATEST", "Latest", "7", "v7", "V7", "bad alias", "-x"])
def test_reserved_or_malformed_alias_names_are_422(client: FlaskClient, alias: str) -> None:
    response = client.put(f"/models/iris/aliases/{alias}", json={"version": 1})
    assert response.status_code == 422
    assert "invalid alias name" in response.json["message"]


@pytest.mark.parametrize("body", [{}, {"version": 0}, {"version": -1}, {"version": True}, {"version": [1]},
                                  {"version": ""}])
def test_put_alias_bad_body_is_422(client: FlaskClient, body: dict[str, Any]) -> None:
    assert client.put("/models/iris/aliases/staging", json=body).status_code == 422


def test_put_alias_to_unknown_version_is_404(client: FlaskClient) -> None:
    assert client.put("/models/iris/aliases/staging", json={"version": 9}).status_code == 404
    assert client.put("/models/nope/aliases/staging", json={"version": 1}).status_code == 404


def test_delete_alias(client: FlaskClient) -> None:
    client.put("/models/iris/aliases/staging", json={"version": 1})
    assert client.delete("/models/iris/aliases/staging").status_code == 204
    assert client.get("/models/iris/aliases").json == {"production": 1}
    assert client.delete("/models/iris/aliases/staging").status_code == 404
    event = _events(client, "iris")[0]
    assert (event["action"], event["alias"], event["before"]) == ("alias.removed", "staging", {"version": 1})


def test_promote_returns_the_previous_version_and_serving_follows(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "iris")
    response = client.post("/models/iris/versions/2/promote", json={"alias": "production"})
    assert response.status_code == 200
    assert response.json == {"alias": "production", "version": 2, "previous_version": 1}
    assert client.post("/predict", json=SETOSA).json["version"] == 2


def test_promote_defaults_to_production_and_creates_new_aliases(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "iris")
    assert client.post("/models/iris/versions/latest/promote").json["alias"] == "production"
    response = client.post("/models/iris/versions/1/promote", json={"alias": "canary"})
    assert response.json == {"alias": "canary", "version": 1, "previous_version": None}


def test_promote_to_reserved_alias_is_422(client: FlaskClient) -> None:
    assert client.post("/models/iris/versions/1/promote", json={"alias": "latest"}).status_code == 422


def test_rollback_moves_back_then_forward(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "iris")
    client.post("/models/iris/versions/2/promote")
    response = client.post("/models/iris/aliases/production/rollback")
    assert response.status_code == 200
    assert response.json == {"alias": "production", "version": 1, "previous_version": 2}
    assert client.post("/predict", json=SETOSA).json["version"] == 1
    response = client.post("/models/iris/aliases/production/rollback")
    assert response.json == {"alias": "production", "version": 2, "previous_version": 1}
    assert client.post("/predict", json=SETOSA).json["version"] == 2


def test_rollback_of_an_alias_that_never_moved_is_409(client: FlaskClient) -> None:
    response = client.post("/models/iris/aliases/production/rollback")
    assert response.status_code == 409
    assert "never moved" in response.json["message"]


def test_rollback_to_a_deleted_version_is_409(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "iris")
    make_version(runtime, "iris")
    client.post("/models/iris/versions/2/promote")
    client.post("/models/iris/versions/3/promote")
    assert client.delete("/models/iris/versions/2").status_code == 204
    response = client.post("/models/iris/aliases/production/rollback")
    assert response.status_code == 409
    assert "previous version 2 was deleted" in response.json["message"]


def test_rollback_of_unknown_alias_or_model_is_404(client: FlaskClient) -> None:
    assert client.post("/models/iris/aliases/staging/rollback").status_code == 404
    assert client.post("/models/nope/aliases/production/rollback").status_code == 404


def test_alias_moves_of_other_aliases_do_not_confuse_rollback(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "iris")
    client.post("/models/iris/versions/2/promote")
    client.put("/models/iris/aliases/staging", json={"version": 1})
    client.put("/models/iris/aliases/staging", json={"version": 2})
    assert client.post("/models/iris/aliases/production/rollback").json["version"] == 1


# --- events ------------------------------------------------------------------------------------


def test_every_change_is_in_the_audit_log_newest_first(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers", alias="production")
    make_version(runtime, "flowers")
    client.post("/models/flowers/versions/2/promote")
    client.post("/models/flowers/aliases/production/rollback")
    client.patch("/models/flowers/versions/2", json={"description": "x"})
    client.delete("/models/flowers/versions/2")
    actions = [(e["action"], e["version"], e["alias"]) for e in _events(client, "flowers")]
    assert actions == [
        ("version.deleted", 2, None),
        ("version.updated", 2, None),
        ("alias.rolled_back", 1, "production"),
        ("alias.moved", 2, "production"),
        ("version.created", 2, None),
        ("alias.set", 1, "production"),
        ("version.created", 1, None),
        ("model.created", None, None),
    ]
    events = _events(client, "flowers")
    assert all(e["at"].endswith("+00:00") for e in events)
    # Changes through the API carry the token's name; the factory writes as anonymous.
    assert [e["actor"] for e in events[:4]] == ["admin"] * 4
    assert {e["actor"] for e in events[4:]} == {"anonymous"}
    moved = events[3]
    assert (moved["before"], moved["after"]) == ({"version": 1}, {"version": 2})


def test_events_paginate(client: FlaskClient) -> None:
    response = client.get("/models/iris/events?page=1&page_size=2")
    assert response.status_code == 200
    assert [e["action"] for e in response.json] == ["alias.set", "version.created"]
    assert json.loads(response.headers["X-Pagination"])["total"] == 3


def test_events_of_unknown_model_is_404(client: FlaskClient) -> None:
    assert client.get("/models/nope/events").status_code == 404


@pytest.mark.parametrize(
    "method, url",
    [("post", "/models"), ("patch", "/models/iris"), ("put", "/models/iris/aliases/x"),
     ("post", "/models/iris/versions/1/promote"), ("post", "/tokens"), ("patch", "/models/iris/versions/1")],
)
def test_deeply_nested_json_is_422_not_a_crash(client: FlaskClient, method: str, url: str) -> None:
    response = getattr(client, method)(url, data="[" * 100_000 + "]" * 100_000, content_type="application/json")
    assert response.status_code == 422
    assert "nested more than 1024 levels" in response.json["message"]
