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


def test_a_blob_removed_by_a_failed_upload_of_the_same_bytes_is_stored_again(runtime: Runtime) -> None:
    """The race the re-store exists for: upload A stores the blob, upload B of the same bytes
    stores it too, fails to commit and removes it (no committed row uses it yet), then A
    commits. A's row must not point at nothing."""
    import threading

    from registry import service

    data = pickle.dumps(fitted_logreg())
    sha256 = hashlib.sha256(data).hexdigest()
    a_stored, b_done = threading.Event(), threading.Event()

    def pause_a(*_args: Any) -> None:  # A's first database use comes right after its put
        if threading.current_thread().name == "upload-a" and not a_stored.is_set():
            a_stored.set()
            assert b_done.wait(30)

    def fail_b(*_args: Any) -> None:
        if threading.current_thread().name == "upload-b":
            raise Injected("B's commit")

    def upload(name: str, errors: list[BaseException]) -> None:
        try:
            with runtime.sessions() as session:
                service.register_version(session, runtime.store, name, data,
                                         service.VersionSpec(fmt="pickle", feature_names=["a", "b", "c", "d"]))
        except BaseException as exc:  # noqa: BLE001 - collected for the asserts
            errors.append(exc)

    event.listen(runtime.engine, "checkout", pause_a)
    event.listen(runtime.sessions, "before_commit", fail_b)
    a_errors: list[BaseException] = []
    b_errors: list[BaseException] = []
    try:
        a = threading.Thread(target=upload, args=("alpha", a_errors), name="upload-a")
        a.start()
        assert a_stored.wait(30)
        assert runtime.store.exists(sha256)  # A's put is done; A waits before its transaction
        b = threading.Thread(target=upload, args=("beta", b_errors), name="upload-b")
        b.start()
        b.join(30)
        assert [type(e) for e in b_errors] == [Injected]
        assert not runtime.store.exists(sha256)  # B's failure removed the blob A is about to use
        b_done.set()
        a.join(30)
    finally:
        b_done.set()
        event.remove(runtime.engine, "checkout", pause_a)
        event.remove(runtime.sessions, "before_commit", fail_b)
    assert a_errors == []
    assert runtime.store.exists(sha256)
    with runtime.sessions() as session:
        version = service.resolve_version(session, "alpha", "latest")
        assert version.sha256 == sha256
        assert service.load_estimator(runtime.store, version).estimator.predict([[5.1, 3.5, 1.4, 0.2]]) is not None
