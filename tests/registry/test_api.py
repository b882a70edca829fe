"""The read side of the registry API, through the HTTP test client."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from modelyard.web.context import Runtime
from tests.factories import make_version


def test_list_models_shows_the_seeded_iris(client: FlaskClient) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    [iris] = response.json
    assert iris["name"] == "iris"
    assert iris["aliases"] == {"production": 1}
    assert iris["latest_version"] == 1
    assert iris["version_count"] == 1
    assert json.loads(response.headers["X-Pagination"])["total"] == 1


def test_list_models_paginates(client: FlaskClient, runtime: Runtime) -> None:
    for name in ("a-model", "b-model", "c-model"):
        make_version(runtime, name)
    response = client.get("/models?page=2&page_size=2")
    assert response.status_code == 200
    assert [m["name"] for m in response.json] == ["c-model", "iris"]
    assert json.loads(response.headers["X-Pagination"]) == {
        "total": 4, "total_pages": 2, "first_page": 1, "last_page": 2, "page": 2, "previous_page": 1,
    }


def test_list_models_filters_by_substring_and_tag(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "roses")
    make_version(runtime, "tulips")
    assert [m["name"] for m in client.get("/models?q=lip").json] == ["tulips"]
    assert [m["name"] for m in client.get("/models?q=%25").json] == []  # LIKE wildcards are literal
    assert [m["name"] for m in client.get("/models?tag=nope:x").json] == []


def test_tag_filter_returns_exactly_the_tagged_models(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "roses")
    make_version(runtime, "tulips")
    client.patch("/models/tulips", json={"tags": {"team": "fraud", "tier": "gold"}})
    client.patch("/models/roses", json={"tags": {"team": "growth"}})
    response = client.get("/models?tag=team:fraud")
    assert [m["name"] for m in response.json] == ["tulips"]
    assert json.loads(response.headers["X-Pagination"])["total"] == 1
    assert [m["name"] for m in client.get("/models?tag=team:growth").json] == ["roses"]
    assert [m["name"] for m in client.get("/models?tag=tier:gold&q=tul").json] == ["tulips"]
    assert client.get("/models?tag=team:fr").json == []  # values match whole, not as a prefix


def test_versions_and_events_are_paginated(client: FlaskClient, runtime: Runtime) -> None:
    for _ in range(3):
        make_version(runtime, "flowers")
    response = client.get("/models/flowers/versions?page=2&page_size=2")
    assert [v["version"] for v in response.json] == [1]
    assert json.loads(response.headers["X-Pagination"]) == {
        "total": 3, "total_pages": 2, "first_page": 1, "last_page": 2, "page": 2, "previous_page": 1,
    }
    events = client.get("/models/flowers/events?page_size=2")
    assert [e["action"] for e in events.json] == ["version.created", "version.created"]
    assert json.loads(events.headers["X-Pagination"])["total"] == 4  # model.created + 3 versions


@pytest.mark.parametrize("query", ["page=0", "page_size=1000", "page=x", "tag=novalue"])
def test_list_models_bad_query_is_422(client: FlaskClient, query: str) -> None:
    response = client.get(f"/models?{query}")
    assert response.status_code == 422
    assert response.json["code"] == 422
    assert "errors" in response.json


def test_model_detail(client: FlaskClient) -> None:
    response = client.get("/models/iris")
    assert response.status_code == 200
    body = response.json
    assert body["name"] == "iris"
    assert body["aliases"] == {"production": 1}
    assert body["created_at"].endswith("+00:00")


def test_unknown_model_is_404_json(client: FlaskClient) -> None:
    for url in ("/models/nope", "/models/nope/versions", "/models/nope/versions/1", "/models/nope/aliases"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.json == {"code": 404, "status": "Not Found", "message": "model 'nope' not found"}


def test_version_detail_of_the_seed(client: FlaskClient) -> None:
    body = client.get("/models/iris/versions/1").json
    assert body["name"] == "iris"
    assert body["version"] == 1
    assert body["estimator"] == "sklearn.svm._classes.SVC"
    assert body["format"] == "pickle"
    assert body["feature_names"] == ["sepal.length", "sepal.width", "petal.length", "petal.width"]
    assert body["feature_aliases"] == {"sepal.lenght": "sepal.length", "petal.lenght": "petal.length"}
    assert body["labels"] == ["setosa", "versicolor", "virginica"]
    assert body["has_proba"] is False
    assert len(body["sha256"]) == 64
    assert body["size_bytes"] > 0
    assert set(body["library_versions"]) >= {"sklearn", "numpy", "python"}
    assert body["aliases"] == ["production"]


@pytest.mark.parametrize("ref", ["1", "v1", "V1", "production", "latest", "LATEST"])
def test_version_refs_resolve(client: FlaskClient, ref: str) -> None:
    response = client.get(f"/models/iris/versions/{ref}")
    assert response.status_code == 200
    assert response.json["version"] == 1


def test_latest_is_the_highest_version(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers")
    make_version(runtime, "flowers", alias="staging")
    make_version(runtime, "flowers")
    assert client.get("/models/flowers/versions/latest").json["version"] == 3
    assert client.get("/models/flowers/versions/staging").json["version"] == 2
    versions = client.get("/models/flowers/versions").json
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert [v["aliases"] for v in versions] == [[], ["staging"], []]


@pytest.mark.parametrize("ref", ["2", "v99", "staging", "0"])
def test_unknown_version_or_alias_is_404(client: FlaskClient, ref: str) -> None:
    response = client.get(f"/models/iris/versions/{ref}")
    assert response.status_code == 404
    assert response.json["message"] == f"model 'iris' has no version or alias '{ref}'"


def test_aliases(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "iris", alias="staging")
    response = client.get("/models/iris/aliases")
    assert response.status_code == 200
    assert response.json == {"production": 1, "staging": 2}


def test_model_list_reflects_aliases_and_counts(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "iris", alias="staging")
    iris = client.get("/models/iris").json
    assert iris["latest_version"] == 2
    assert iris["version_count"] == 2
    assert iris["aliases"] == {"production": 1, "staging": 2}


@pytest.mark.parametrize("method, url", [("put", "/models/iris/versions/1"), ("post", "/models/iris/versions/1"),
                                         ("delete", "/models"), ("put", "/models/iris/events")])
def test_wrong_method_is_405_json(client: FlaskClient, method: str, url: str) -> None:
    response = getattr(client, method)(url)
    assert response.status_code == 405
    assert response.json["code"] == 405
    assert response.json["status"] == "Method Not Allowed"
