"""Failures injected between the upload's steps leave no orphan row, no orphan file, and the
previous state served. The failures are real ones: the database refusing a flush or a commit
(SQLAlchemy session events), the artifact store unable to create its directory."""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, func, select

from modelyard.runtime import Runtime
from registry.models import Event, ModelVersion
from tests.factories import fitted_logreg

SETOSA = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}


class Injected(RuntimeError):
    pass


@pytest.fixture
def fail_on(runtime: Runtime) -> Iterator[Any]:
    installed: list[tuple[str, Any]] = []

    def install(hook: str) -> None:
        def boom(*_args: Any) -> None:
            raise Injected(hook)

        event.listen(runtime.sessions, hook, boom)
        installed.append((hook, boom))

    yield install
    for hook, fn in installed:
        event.remove(runtime.sessions, hook, fn)


def _upload(client: FlaskClient, name: str, data: bytes) -> Any:
    return client.post(f"/models/{name}/versions", data={"file": (io.BytesIO(data), "m.pkl")},
                       content_type="multipart/form-data")


def _state(runtime: Runtime) -> tuple[int, int]:
    with runtime.sessions() as session:
        return (session.scalar(select(func.count()).select_from(ModelVersion)) or 0,
                session.scalar(select(func.count()).select_from(Event)) or 0)


def _blobs(runtime: Runtime) -> set[str]:
    return {p.name for p in (runtime.store.root / "sha256").rglob("*") if p.is_file()}  # type: ignore[attr-defined]


def _assert_previous_state_served(client: FlaskClient) -> None:
    answer = client.post("/predict", json=SETOSA).json
    assert answer["version"] == 1 and answer["predictions"] == [0]
    assert client.get("/models/iris").json["version_count"] == 1


@pytest.mark.parametrize("hook", ["before_flush", "before_commit"])
def test_failed_database_write_leaves_no_row_and_no_file(client: FlaskClient, runtime: Runtime, fail_on: Any, hook: str) -> None:
    before, blobs = _state(runtime), _blobs(runtime)
    data = pickle.dumps(fitted_logreg())
    fail_on(hook)
    response = _upload(client, "iris", data)
    assert response.status_code == 500
    assert response.json == {"code": 500, "status": "Internal Server Error", "message": "internal server error"}
    assert _state(runtime) == before
    assert _blobs(runtime) == blobs
    assert hashlib.sha256(data).hexdigest() not in _blobs(runtime)
    _assert_previous_state_served(client)


def test_failed_commit_keeps_a_blob_another_version_uses(client: FlaskClient, runtime: Runtime, fail_on: Any) -> None:
    data = pickle.dumps(fitted_logreg())
    assert _upload(client, "other", data).status_code == 201
    fail_on("before_commit")
    assert _upload(client, "iris", data).status_code == 500
    sha = hashlib.sha256(data).hexdigest()
    assert sha in _blobs(runtime)
    assert client.post("/models/other/1/predict", json={"x0": 1, "x1": 2, "x2": 3, "x3": 4}).status_code == 200


def test_failed_artifact_write_leaves_no_row(client: FlaskClient, runtime: Runtime) -> None:
    data = pickle.dumps(fitted_logreg())
    sha = hashlib.sha256(data).hexdigest()
    # A directory where the blob must go: the rename into place fails like a full disk would.
    runtime.store.path_for(sha).mkdir(parents=True)  # type: ignore[attr-defined]
    before = _state(runtime)
    response = _upload(client, "iris", data)
    assert response.status_code == 500
    assert _state(runtime) == before
    _assert_previous_state_served(client)


def test_failed_delete_commit_keeps_everything(client: FlaskClient, runtime: Runtime, fail_on: Any) -> None:
    blobs = _blobs(runtime)
    fail_on("before_commit")
    assert client.delete("/models/iris").status_code == 500
    assert _blobs(runtime) == blobs
    _assert_previous_state_served(client)


def test_failed_promotion_keeps_the_alias(client: FlaskClient, runtime: Runtime, fail_on: Any) -> None:
    assert _upload(client, "iris", pickle.dumps(fitted_logreg())).status_code == 201
    fail_on("before_commit")
    assert client.post("/models/iris/versions/2/promote").status_code == 500
    assert client.post("/predict", json=SETOSA).json["version"] == 1
