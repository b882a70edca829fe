"""An alias's history, read from the audit log: every state (a version or weights) newest first
with since/until, who and which event, paged like the other lists; ``?at=`` the state in force
at an instant (404 before the alias existed and while it was removed); history also for moves
recorded before the history endpoint existed. On both backends."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import update

from modelyard.registry.models import Event
from modelyard.web.context import Runtime
from tests.factories import make_version


def _moves(client: FlaskClient) -> list[tuple[str, Any]]:
    """flowers 1-3; canary: 1, then 90/10 between 1 and 2, then 3, removed, then 2 again."""
    steps: list[tuple[str, Any]] = []
    for method, path, body in (
        ("put", "/models/flowers/aliases/canary", {"version": 1}),
        ("put", "/models/flowers/aliases/canary", {"weights": {"1": 90, "2": 10}}),
        ("post", "/models/flowers/versions/3/promote", {"alias": "canary"}),
        ("delete", "/models/flowers/aliases/canary", None),
        ("put", "/models/flowers/aliases/canary", {"version": 2}),
    ):
        time.sleep(0.02)  # distinct instants on every backend's clock
        response = getattr(client, method)(path, **({"json": body} if body is not None else {}))
        assert response.status_code in (200, 204), response.json
        steps.append((method, body))
    return steps


@pytest.fixture
def moved(client: FlaskClient, runtime: Runtime) -> list[dict[str, Any]]:
    for _ in range(3):
        make_version(runtime, "flowers")
    _moves(client)
    return client.get("/models/flowers/events?page_size=100").json


def test_every_state_newest_first_with_since_until_who_and_event(client: FlaskClient,
                                                                 moved: list[dict[str, Any]]) -> None:
    states = client.get("/models/flowers/aliases/canary/history").json
    assert [{k: s[k] for k in s if k in ("version", "weights", "action")} for s in states] == [
        {"version": 2, "action": "alias.set"},
        {"version": 3, "action": "alias.moved"},
        {"weights": {"1": 90, "2": 10}, "action": "alias.moved"},
        {"version": 1, "action": "alias.set"},
    ]
    events = {e["id"]: e for e in moved if e["alias"] == "canary"}
    removed = next(e for e in moved if e["action"] == "alias.removed")
    assert states[0]["until"] is None  # in force now
    assert states[1]["until"] == removed["at"]  # ended by the removal, not by the next set
    assert states[2]["until"] == states[1]["since"] and states[3]["until"] == states[2]["since"]
    for state in states:
        assert events[state["event"]]["at"] == state["since"] and state["actor"] == "admin"
        assert state["alias"] == "canary"


def test_history_pages_by_number_and_by_cursor(client: FlaskClient, moved: list[dict[str, Any]]) -> None:
    whole = client.get("/models/flowers/aliases/canary/history").json
    first = client.get("/models/flowers/aliases/canary/history?page_size=3")
    assert json.loads(first.headers["X-Pagination"])["total"] == 4 and first.json == whole[:3]
    assert client.get("/models/flowers/aliases/canary/history?page_size=3&page=2").json == whole[3:]
    cursor = json.loads(first.headers["X-Pagination"])["next_cursor"]
    by_cursor = client.get(f"/models/flowers/aliases/canary/history?page_size=3&cursor={cursor}")
    assert by_cursor.json == whole[3:] and "next_cursor" not in json.loads(by_cursor.headers["X-Pagination"])
    two = client.get("/models/flowers/aliases/canary/history?page_size=2").json
    assert two[1]["until"] == whole[1]["until"]  # a page's last state still knows what ended it


def test_the_state_at_each_recorded_instant(client: FlaskClient, moved: list[dict[str, Any]]) -> None:
    def at(when: str) -> Any:
        return client.get("/models/flowers/aliases/canary/history", query_string={"at": when})

    states = list(reversed(client.get("/models/flowers/aliases/canary/history").json))
    for state in states:
        answer = at(state["since"])
        assert answer.status_code == 200, answer.json
        expected = {k: state[k] for k in ("version", "weights") if k in state}
        assert answer.json == {"alias": "canary", "at": state["since"], **expected}
        assert "X-Pagination" not in answer.headers
    first = dt.datetime.fromisoformat(states[0]["since"])
    before = at((first - dt.timedelta(seconds=1)).isoformat())
    assert before.status_code == 404 and "had no alias 'canary' at" in before.json["message"]
    removed_at = next(e for e in moved if e["action"] == "alias.removed")["at"]
    assert at(removed_at).status_code == 404  # removed then
    naive = at(states[-1]["since"].replace("+00:00", ""))  # no offset: UTC
    assert naive.status_code == 200 and naive.json["version"] == 2
    assert at("yesterday").status_code == 422


def test_history_of_moves_made_before_it_existed(client: FlaskClient, runtime: Runtime) -> None:
    """Events written before weights existed recorded {"version": n} after a move, or nothing."""
    make_version(runtime, "old", alias="production")
    make_version(runtime, "old")
    assert client.post("/models/old/versions/2/promote").status_code == 200
    with runtime.sessions() as session:
        session.execute(update(Event).where(Event.model_name == "old", Event.action == "alias.set")
                        .values(after=None))
        session.commit()
    states = client.get("/models/old/aliases/production/history").json
    assert [s["version"] for s in states] == [2, 1]


@pytest.mark.parametrize("path, status", [
    ("/models/nope/aliases/production/history", 404),
    ("/models/iris/aliases/never/history", 404),
    ("/models/iris/aliases/never/history?at=2026-01-01T00:00:00Z", 404),
    ("/models/iris/aliases/production/history?cursor=bogus", 422),
])
def test_unknown_models_and_aliases_are_404(client: FlaskClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status and response.json["code"] == status


def test_history_is_a_private_read_like_the_audit_log(anon: FlaskClient) -> None:
    response = anon.get("/models/iris/aliases/production/history")
    assert response.status_code == 401 and "audit log" in response.json["message"]
