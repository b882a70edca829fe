"""The lists by page number and by cursor: filters in SQL, the cursor walk, and what a cursor
refuses. (The timings at 1,000 and 100,000 rows are bench/lists.py's.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from modelyard.registry import service
from modelyard.web.context import Runtime
from tests.factories import make_version


def _walk(client: FlaskClient, url: str) -> tuple[list[dict[str, Any]], int]:
    """Every item of a list, following the Link header's next page; and how many pages it took."""
    items: list[dict[str, Any]] = []
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.json
        items.extend(response.json)
        pages += 1
        metadata = json.loads(response.headers["X-Pagination"])
        link = response.headers.get("Link")
        assert (link is None) == ("next_cursor" not in metadata)
        url = link[1:link.index(">")] if link else ""
        assert pages < 100
    return items, pages


def _create(runtime: Runtime, *names: str, tags: dict[str, str] | None = None) -> None:
    with runtime.sessions() as session:
        for name in names:
            service.create_model(session, name, tags=tags)


def test_the_cursor_walks_every_model_once_in_name_order(client: FlaskClient, runtime: Runtime) -> None:
    names = [f"m-{i:02d}" for i in range(11)]
    _create(runtime, *reversed(names))
    items, pages = _walk(client, "/models?page_size=3")
    assert [m["name"] for m in items] == sorted([*names, "iris"])
    assert pages == 4
    by_number = [m["name"] for page in (1, 2, 3, 4) for m in client.get(f"/models?page_size=3&page={page}").json]
    assert by_number == [m["name"] for m in items]


def test_a_cursor_page_says_the_total_and_the_next_cursor_not_page_numbers(client: FlaskClient,
                                                                           runtime: Runtime) -> None:
    _create(runtime, "a", "b", "c")
    first = client.get("/models?page_size=2")
    metadata = json.loads(first.headers["X-Pagination"])
    assert metadata["total"] == 4 and metadata["page"] == 1 and metadata["next_page"] == 2
    second = client.get(f"/models?page_size=2&cursor={metadata['next_cursor']}")
    assert [m["name"] for m in second.json] == ["c", "iris"]
    assert json.loads(second.headers["X-Pagination"]) == {}  # a cursor page is not counted
    assert "Link" not in second.headers


def test_the_cursor_keeps_its_place_when_models_are_added_before_it(client: FlaskClient, runtime: Runtime) -> None:
    _create(runtime, "b", "d", "f")
    first = client.get("/models?page_size=2")
    assert [m["name"] for m in first.json] == ["b", "d"]
    _create(runtime, "a", "c")  # both sort before the cursor: a page number would shift, the cursor does not
    cursor = json.loads(first.headers["X-Pagination"])["next_cursor"]
    assert [m["name"] for m in client.get(f"/models?page_size=2&cursor={cursor}").json] == ["f", "iris"]


def test_the_link_keeps_the_filters(client: FlaskClient, runtime: Runtime) -> None:
    _create(runtime, "fraud-a", "fraud-b", "fraud-c", tags={"team": "risk"})
    _create(runtime, "fraud-d", tags={"team": "growth"})
    _create(runtime, "other", tags={"team": "risk"})
    items, pages = _walk(client, "/models?q=FRAUD&tag=team:risk&page_size=1")
    assert [m["name"] for m in items] == ["fraud-a", "fraud-b", "fraud-c"]
    assert pages == 3


def test_the_name_filter_ignores_case_and_reads_wildcards_literally(client: FlaskClient, runtime: Runtime) -> None:
    _create(runtime, "Churn_Model", "churnXmodel", "churn.model")
    assert [m["name"] for m in client.get("/models?q=n_m").json] == ["Churn_Model"]
    assert client.get("/models?q=%25").json == []
    assert {m["name"] for m in client.get("/models?q=CHURN").json} == {"Churn_Model", "churnXmodel", "churn.model"}


def test_the_tag_filter_follows_every_change_of_the_tags(client: FlaskClient, runtime: Runtime) -> None:
    def tagged(tag: str) -> list[str]:
        response = client.get(f"/models?tag={tag}")
        assert json.loads(response.headers["X-Pagination"])["total"] == len(response.json)
        return [m["name"] for m in response.json]

    assert client.post("/models", json={"name": "roses", "tags": {"team": "garden"}}).status_code == 201
    assert tagged("team:garden") == ["roses"]
    assert tagged("source:seed") == []  # the seeded iris's tags are its version's, not its model's
    client.patch("/models/roses", json={"tags": {"team": "florist", "colour": "red"}})
    assert tagged("team:garden") == []
    assert tagged("team:florist") == tagged("colour:red") == ["roses"]
    client.patch("/models/roses", json={"description": "only the description"})
    assert tagged("colour:red") == ["roses"]
    client.patch("/models/roses", json={"tags": {}})
    assert tagged("team:florist") == []
    client.patch("/models/roses", json={"tags": {"team": "florist"}})
    assert client.delete("/models/roses").status_code == 204
    assert tagged("team:florist") == []
    assert client.post("/models", json={"name": "roses", "tags": {"team": "again"}}).status_code == 201
    assert tagged("team:again") == ["roses"]


def test_versions_and_events_walk_by_cursor(client: FlaskClient, runtime: Runtime) -> None:
    for _ in range(3):
        make_version(runtime, "flowers")
    with runtime.sessions() as session:
        service.delete_version(session, runtime.store, "flowers", "2")
    versions, pages = _walk(client, "/models/flowers/versions?page_size=1")
    assert [v["version"] for v in versions] == [3, 1]
    assert pages == 2
    second = client.get(client.get("/models/flowers/versions?page_size=1").headers["Link"][1:].split(">")[0])
    assert json.loads(second.headers["X-Pagination"]) == {"total": 2}  # kept on the model: free to say
    assert client.get("/models/flowers").json["version_count"] == 2
    assert client.get("/models/flowers").json["latest_version"] == 3
    events, pages = _walk(client, "/models/flowers/events?page_size=2")
    assert [e["action"] for e in events] == ["version.deleted", "version.created", "version.created",
                                             "version.created", "model.created"]
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    assert pages == 3


@pytest.mark.parametrize("url", [
    "/models?cursor=nonsense!",
    "/models?cursor=WzEsMl0",  # base64 of [1,2]: JSON, but no cursor of ours
    "/models/iris/versions?cursor=bad",
    "/models/iris/events?cursor=bad",
])
def test_a_cursor_this_server_did_not_give_is_a_422(client: FlaskClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 422
    assert response.json["code"] == 422
    assert "cursor" in json.dumps(response.json["errors"])


def test_a_cursor_on_a_model_that_never_was_is_a_404(client: FlaskClient, runtime: Runtime) -> None:
    make_version(runtime, "flowers")
    make_version(runtime, "flowers")
    cursor = json.loads(client.get("/models/flowers/events?page_size=1").headers["X-Pagination"])["next_cursor"]
    assert client.get(f"/models/nothing/events?cursor={cursor}").status_code == 404
    assert client.get(f"/models/nothing/versions?cursor={cursor}").status_code == 422  # an events cursor
    assert client.get("/models/nothing/versions?page=3").status_code == 404


def test_a_cursor_of_one_list_is_refused_by_another(client: FlaskClient, runtime: Runtime) -> None:
    _create(runtime, "a")
    models_cursor = json.loads(client.get("/models?page_size=1").headers["X-Pagination"])["next_cursor"]
    make_version(runtime, "flowers")
    make_version(runtime, "flowers")
    versions_cursor = json.loads(client.get("/models/flowers/versions?page_size=1").headers["X-Pagination"])[
        "next_cursor"]
    assert client.get(f"/models/flowers/versions?cursor={models_cursor}").status_code == 422
    assert client.get(f"/models/flowers/events?cursor={versions_cursor}").status_code == 422
    assert client.get(f"/models?cursor={versions_cursor}").status_code == 422
    assert client.get(f"/models/flowers/versions?cursor={versions_cursor}").json[0]["version"] == 1


def test_the_openapi_document_describes_the_cursor_and_the_link(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    operation = spec["paths"]["/models/{name}/versions"]["get"]
    assert "cursor" in {p["name"] for p in operation["parameters"]}
    headers = operation["responses"]["200"]["headers"]
    assert {"X-Pagination", "Link"} <= set(headers)
