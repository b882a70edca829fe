"""Weighted aliases (a canary without a mesh): PUT an alias's weights, every protocol serves each
request by one version chosen by weight (by X-Request-Key when given: the same key, the same
version), answers say which, promote makes the alias plain again, rollback restores the split,
and a version in a split cannot be deleted. On both backends."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from flask.testing import FlaskClient

from modelyard.web.context import Runtime
from tests.factories import X, make_version, y

ROW = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture
def flowers(runtime: Runtime) -> None:
    """flowers versions 1-3 (the third a decision tree), production on 1."""
    from sklearn.tree import DecisionTreeClassifier

    make_version(runtime, "flowers", alias="production")
    make_version(runtime, "flowers")
    make_version(runtime, "flowers", DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y))


def _served(client: FlaskClient, n: int, url: str = "/models/flowers/production/predict",
            key: str | None = None, keys: bool = False) -> Counter[int]:
    seen: Counter[int] = Counter()
    for i in range(n):
        headers = {"X-Request-Key": key if key is not None else f"customer-{i}"} if key is not None or keys else {}
        response = client.post(url, json=ROW, headers=headers)
        assert response.status_code == 200, response.json
        version = int(response.headers["X-Model-Version"])
        assert version == response.json["version"]
        seen[version] += 1
    return seen


def test_weights_are_set_shown_and_answered(client: FlaskClient, flowers: None) -> None:
    moved = client.put("/models/flowers/aliases/production", json={"weights": {"1": 90, "2": 10}})
    assert moved.status_code == 200, moved.json
    assert moved.json == {"alias": "production", "version": 1, "previous_version": 1, "weights": {"1": 90, "2": 10}}
    client.put("/models/flowers/aliases/staging", json={"version": 3})
    assert client.get("/models/flowers/aliases").json == {"production": {"weights": {"1": 90, "2": 10}},
                                                          "staging": 3}
    again = client.put("/models/flowers/aliases/production", json={"weights": {"v3": 1, "2": 3}}).json
    assert again == {"alias": "production", "version": 2, "previous_version": 1, "weights": {"2": 3, "3": 1},
                     "previous_weights": {"1": 90, "2": 10}}
    event = client.get("/models/flowers/events").json[0]
    assert (event["action"], event["before"], event["after"]) == (
        "alias.moved", {"weights": {"1": 90, "2": 10}}, {"weights": {"2": 3, "3": 1}})


@pytest.mark.parametrize("body, status, words", [
    ({"weights": {"1": 50, "2": -1}}, 422, "whole number >= 0"),
    ({"weights": {"1": 0.5, "2": 1}}, 422, "whole number >= 0"),
    ({"weights": {"1": True}}, 422, "whole number >= 0"),
    ({"weights": {"1": 0, "2": 0}}, 422, "at least one weight must be above 0"),
    ({"weights": {"latest": 10}}, 422, "'latest' is not a version number"),
    ({"weights": {}}, 422, "weights must be an object"),
    ({"weights": {"1": 50, "9": 50}}, 404, "has no version or alias '9'"),
    ({"weights": {"1": 50, "v1": 50}}, 422, "version 1 is given twice"),
    ({"version": 1, "weights": {"1": 1}}, 422, "exactly one of version"),
    ({}, 422, "exactly one of version"),
])
def test_bad_weights_are_refused_and_change_nothing(client: FlaskClient, flowers: None, body: dict[str, Any],
                                                    status: int, words: str) -> None:
    response = client.put("/models/flowers/aliases/production", json=body)
    assert response.status_code == status, response.json
    assert words in response.json["message"] or words in str(response.json.get("errors")), response.json
    assert client.get("/models/flowers/aliases").json == {"production": 1}


def test_requests_are_split_by_weight_and_a_zero_gets_none(client: FlaskClient, flowers: None) -> None:
    client.put("/models/flowers/aliases/production", json={"weights": {"1": 70, "2": 30, "3": 0}})
    seen = _served(client, 2000, keys=True)  # 2,000 distinct keys: the hash spreads them by weight
    assert set(seen) == {1, 2}
    assert abs(seen[1] / 2000 - 0.7) < 0.04 and abs(seen[2] / 2000 - 0.3) < 0.04
    random_seen = _served(client, 600)  # no key: at random, by the same weights
    assert set(random_seen) == {1, 2} and random_seen[1] > random_seen[2]


def test_the_same_key_always_gets_the_same_version_on_every_protocol(client: FlaskClient, flowers: None) -> None:
    client.put("/models/flowers/aliases/production", json={"weights": {"1": 50, "2": 50}})
    chosen = {key: _served(client, 1, key=key) for key in (f"user-{i}" for i in range(40))}
    assert {next(iter(c)) for c in chosen.values()} == {1, 2}  # both versions serve someone
    for key, first in chosen.items():
        version = next(iter(first))
        assert _served(client, 5, key=key) == Counter({version: 5})
        headers = {"X-Request-Key": key}
        assert client.post("/models/flowers/production/invocations", json=ROW,
                           headers=headers).headers["X-Model-Version"] == str(version)
        v2 = client.post("/v2/models/flowers/versions/production/infer", headers=headers, json={
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROW["inputs"][0]}]})
        assert v2.json["model_version"] == str(version) == v2.headers["X-Model-Version"]
        default = client.post("/v2/models/flowers/infer", headers=headers, json={
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROW["inputs"][0]}]})
        assert default.json["model_version"] == str(version)  # the default version is production's split


def test_a_weight_change_is_served_on_the_next_request(client: FlaskClient, flowers: None) -> None:
    client.put("/models/flowers/aliases/production", json={"weights": {"1": 1, "2": 0}})
    assert _served(client, 20) == Counter({1: 20})
    client.put("/models/flowers/aliases/production", json={"weights": {"1": 0, "2": 1}})
    assert _served(client, 20) == Counter({2: 20})


def test_promote_makes_it_plain_and_rollback_restores_the_split(client: FlaskClient, flowers: None) -> None:
    client.put("/models/flowers/aliases/production", json={"weights": {"1": 90, "2": 10}})
    promoted = client.post("/models/flowers/versions/2/promote").json
    assert promoted == {"alias": "production", "version": 2, "previous_version": 1,
                        "previous_weights": {"1": 90, "2": 10}}
    assert client.get("/models/flowers/aliases").json == {"production": 2}
    assert _served(client, 10) == Counter({2: 10})
    back = client.post("/models/flowers/aliases/production/rollback").json
    assert back == {"alias": "production", "version": 1, "previous_version": 2, "weights": {"1": 90, "2": 10}}
    assert client.get("/models/flowers/aliases").json == {"production": {"weights": {"1": 90, "2": 10}}}
    forward = client.post("/models/flowers/aliases/production/rollback").json  # a toggle, as for plain aliases
    assert forward["version"] == 2 and "weights" not in forward
    assert client.post("/models/flowers/aliases/production/rollback").json["weights"] == {"1": 90, "2": 10}


def test_a_version_in_a_split_cannot_be_deleted(client: FlaskClient, flowers: None) -> None:
    client.put("/models/flowers/aliases/canary", json={"weights": {"1": 100, "3": 0}})
    for number in (1, 3):
        response = client.delete(f"/models/flowers/versions/{number}")
        assert response.status_code == 409 and "canary" in response.json["message"]
    assert client.delete("/models/flowers/versions/2").status_code == 204


def test_a_rollback_to_a_split_whose_version_was_deleted_is_409(client: FlaskClient, flowers: None) -> None:
    client.put("/models/flowers/aliases/canary", json={"weights": {"2": 50, "3": 50}})
    client.put("/models/flowers/aliases/canary", json={"version": 1})
    assert client.delete("/models/flowers/versions/3").status_code == 204
    response = client.post("/models/flowers/aliases/canary/rollback")
    assert response.status_code == 409 and "previous version 3 was deleted" in response.json["message"]


def test_requests_are_counted_by_model_alias_and_version(client: FlaskClient, flowers: None) -> None:
    def counts() -> dict[str, float]:
        text = client.get("/metrics").get_data(as_text=True)
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("modelyard_alias_requests_total{") and 'model="flowers"' in line}

    client.put("/models/flowers/aliases/production", json={"weights": {"1": 50, "2": 50}})
    before = counts()
    seen = _served(client, 40, keys=True)
    assert client.post("/models/flowers/1/predict", json=ROW).status_code == 200  # no alias: not counted here
    after = counts()
    series = 'modelyard_alias_requests_total{{alias="production",model="flowers",status="200",version="{}"}}'
    assert {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)} == {
        series.format(version): float(count) for version, count in seen.items()}
