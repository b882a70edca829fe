"""Gated promotion ([aliases] replay and second_approver): a version reaches a gated alias only if
its upload example still predicts as at upload (else 409 naming the row), and a move waits for a
second promoter's token (the same token approving is a 403; pending moves are listed and expire).
On both backends."""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from modelyard.app import create_app
from modelyard.registry.models import Approval, ModelVersion
from modelyard.web.context import EXTENSION
from tests.conftest import admin_client
from tests.factories import IRIS_FEATURES, X, fitted_logreg

EXAMPLE = X[::30].tolist()  # five rows, one of each kind and more


@pytest.fixture
def gated(config: dict[str, dict[str, Any]]) -> Iterator[Flask]:
    app = create_app({**config, "aliases": {"replay": ["production"], "second_approver": ["production"],
                                            "approval_ttl_seconds": 3600}})
    yield app
    app.extensions[EXTENSION].engine.dispose()


def _client(app: Flask, token: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def _promoters(app: Flask) -> tuple[FlaskClient, FlaskClient]:
    admin = admin_client(app)
    return tuple(_client(app, admin.post("/tokens", json={"name": who, "role": "promoter"}).json["token"])
                 for who in ("alice", "bob"))  # type: ignore[return-value]


def _upload(client: FlaskClient, example: Any = EXAMPLE) -> int:
    data: dict[str, Any] = {"file": (io.BytesIO(pickle.dumps(fitted_logreg())), "m.pkl"),
            "features": json.dumps(IRIS_FEATURES)}
    if example is not None:
        data["example"] = json.dumps(example)
    response = client.post("/models/gated/versions", data=data, content_type="multipart/form-data")
    assert response.status_code == 201, response.json
    return int(response.json["version"])


def test_a_second_approver_makes_the_move_and_the_asker_cannot(gated: Flask) -> None:
    alice, bob = _promoters(gated)
    assert _upload(alice) == 1
    asked = alice.post("/models/gated/versions/1/promote")
    assert asked.status_code == 202, asked.json
    assert asked.json["status"] == "pending" and asked.json["version"] == 1 and asked.json["requested_by"] == "alice"
    assert asked.json["approve"] == f"/models/gated/aliases/production/approvals/{asked.json['id']}"
    assert alice.get("/models/gated/aliases").json == {}  # nothing moved yet
    listed = bob.get("/models/gated/aliases/production/approvals").json
    assert [p["id"] for p in listed] == [asked.json["id"]]
    refused = alice.post(asked.json["approve"])
    assert refused.status_code == 403 and "second approver" in refused.json["message"]
    done = bob.post(asked.json["approve"])
    assert done.status_code == 200 and done.json == {"alias": "production", "version": 1, "previous_version": None}
    assert bob.get("/models/gated/aliases").json == {"production": 1}
    again = bob.post(asked.json["approve"])
    assert again.status_code == 409 and "bob approved it already" in again.json["message"]
    assert bob.get("/models/gated/aliases/production/approvals").json == []
    events = admin_client(gated).get("/models/gated/events").json
    assert [e["action"] for e in events[:2]] == ["alias.set", "alias.move_requested"]
    assert events[0]["actor"] == "bob" and events[0]["after"]["approval"]["requested_by"] == "alice"
    assert events[1]["actor"] == "alice"


def test_weights_wait_too_and_pending_moves_expire(gated: Flask) -> None:
    alice, bob = _promoters(gated)
    _upload(alice)
    _upload(alice)
    bob.post(alice.post("/models/gated/versions/1/promote").json["approve"])
    split = alice.put("/models/gated/aliases/production", json={"weights": {"1": 90, "2": 10}, "guard": {
        "metric": "error_rate", "max": 0.1, "min_samples": 50}})
    assert split.status_code == 202 and split.json["weights"] == {"1": 90, "2": 10}
    assert split.json["guard"]["min_samples"] == 50
    moved = bob.post(split.json["approve"])
    assert moved.status_code == 200 and moved.json["weights"] == {"1": 90, "2": 10}
    assert bob.get("/models/gated/aliases/production/guard").status_code == 200
    late = alice.post("/models/gated/versions/2/promote")
    page = " ".join(bob.get("/ui/models/gated").get_data(as_text=True).split())
    assert f"move {late.json['id']} to v2 asked by alice, waits for a second approver" in page
    with gated.extensions[EXTENSION].sessions() as session:
        session.execute(update(Approval).values(expires_at=Approval.requested_at))
        session.commit()
    assert bob.get("/models/gated/aliases/production/approvals").json == []
    expired = bob.post(late.json["approve"])
    assert expired.status_code == 409 and "expired" in expired.json["message"]
    for missing in ("999", "50205280232578863857664"):
        assert bob.post(f"/models/gated/aliases/production/approvals/{missing}").status_code == 404
    assert bob.get("/models/gated/aliases").json["production"]["weights"] == {"1": 90, "2": 10}
    # a rollback is the lever of an incident: never held
    assert bob.post("/models/gated/aliases/production/rollback").json["version"] == 1


def test_a_version_whose_example_predicts_otherwise_now_is_refused_naming_the_row(gated: Flask) -> None:
    alice, bob = _promoters(gated)
    _upload(alice)
    assert _upload(alice, example=None) == 2
    with gated.extensions[EXTENSION].sessions() as session:  # as if version 1 had answered otherwise at upload
        mine = (ModelVersion.version == 1) & ModelVersion.model.has(name="gated")
        stored = list(session.query(ModelVersion.example_predictions).filter(mine).scalar())
        assert stored == fitted_logreg().predict(EXAMPLE).tolist()
        stored[3] = 2 if stored[3] != 2 else 0
        row = session.query(ModelVersion).filter(mine).one()
        row.example_predictions = stored
        session.commit()
    refused = alice.post("/models/gated/versions/1/promote")
    assert refused.status_code == 409 and "version 1 of 'gated' failed its replay: row 3 of its example" in \
        refused.json["message"]
    bare = alice.post("/models/gated/versions/2/promote")
    assert bare.status_code == 409 and "no upload example" in bare.json["message"]
    assert alice.get("/models/gated/aliases/production/approvals").json == []  # nothing held


def test_a_replayed_version_that_agrees_passes(config: dict[str, dict[str, Any]]) -> None:
    app = create_app({**config, "aliases": {"replay": ["production"], "second_approver": [],
                                            "approval_ttl_seconds": 60}})
    try:
        client = admin_client(app)
        _upload(client, example=[dict(zip(IRIS_FEATURES, row)) for row in EXAMPLE])  # records replay too
        moved = client.post("/models/gated/versions/1/promote")
        assert moved.status_code == 200 and moved.json["version"] == 1
        staging = client.put("/models/gated/aliases/staging", json={"version": 1})  # not gated: no replay needed
        assert staging.status_code == 200
    finally:
        app.extensions[EXTENSION].engine.dispose()


def test_the_trial_keeps_what_the_example_predicted_for_every_input_kind() -> None:
    """Arrays, DataFrames (string columns) and texts: the answers a replay compares with."""
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from modelyard.registry import introspect

    assert introspect.inspect(fitted_logreg(), example=EXAMPLE).example_predictions == \
        fitted_logreg().predict(EXAMPLE).tolist()
    assert introspect.inspect(fitted_logreg()).example_predictions is None  # no example, nothing to replay
    frame = pd.DataFrame({"colour": ["red", "blue", "red", "green"], "size": [1.0, 2.0, 3.0, 4.0]})
    mixed = make_pipeline(make_column_transformer((OneHotEncoder(), ["colour"]), remainder="passthrough"),
                          LogisticRegression()).fit(frame, [0, 1, 0, 1])
    info = introspect.inspect(mixed, example=[{"colour": "blue", "size": 2.0}, {"colour": "red", "size": 1.0}])
    assert info.input_kind == "dataframe" and info.example_predictions == [1, 0]
    texts = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(["good day", "bad day", "good", "bad"],
                                                                      [1, 0, 1, 0])
    assert introspect.inspect(texts, example=["good good", "bad"]).example_predictions == [1, 0]
