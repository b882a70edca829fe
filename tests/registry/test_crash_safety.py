"""Failures injected between the upload's steps leave no orphan row, no orphan file, and the
previous state served. The failures are real ones: the database refusing a flush or a commit
(SQLAlchemy session events), the artifact store unable to create its directory."""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, func, select

from modelyard.registry import queries, refs
from modelyard.registry.models import Event, ModelVersion
from modelyard.registry.storage import LocalArtifactStore
from modelyard.web.context import Runtime
from tests.conftest import config_in
from tests.factories import fitted_logreg

SETOSA = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}


class Injected(RuntimeError):
    pass


@pytest.fixture(params=["sqlite-local", "sqlite-database", "postgresql-database"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Every failure here is tried with the artifacts on the local disk and in the database, and
    with the database on SQLite and on PostgreSQL."""
    backend, store = request.param.split("-")
    database = {"url": request.getfixturevalue("pg_copy")} if backend == "postgresql" else {}
    return config_in(tmp_path, artifacts={"store": store, "root": str(tmp_path / "artifacts")},
                     **({"database": database} if database else {}))


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
    return {sha for sha, _ in runtime.store.digests()}


def _assert_previous_state_served(client: FlaskClient) -> None:
    answer = client.post("/predict", json=SETOSA).json
    assert answer["version"] == 1 and answer["predictions"] == [0]
    assert client.get("/models/iris").json["version_count"] == 1


@pytest.mark.parametrize("hook", ["before_flush", "before_commit"])
def test_failed_database_write_leaves_no_row_and_no_file(client: FlaskClient, runtime: Runtime, fail_on: Any,
                                                         hook: str) -> None:
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
    if isinstance(runtime.store, LocalArtifactStore):
        # A directory where the blob must go: the rename into place fails like a full disk would.
        runtime.store.path_for(sha).mkdir(parents=True)
    else:
        def refuse(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.startswith("INSERT INTO artifact_chunks"):
                raise Injected("the database refuses the blob's bytes")

        event.listen(runtime.engine, "before_cursor_execute", refuse)
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

    from modelyard.registry import service
    from modelyard.registry.upload import VersionSpec

    data = pickle.dumps(fitted_logreg())
    sha256 = hashlib.sha256(data).hexdigest()
    a_stored, b_done = threading.Event(), threading.Event()

    checking = threading.local()

    def pause_a(*_args: Any) -> None:
        """A's first database use once its blob is stored (the database store's own writes
        check out connections too)."""
        if threading.current_thread().name != "upload-a" or a_stored.is_set() or getattr(checking, "now", False):
            return
        checking.now = True
        try:
            stored = runtime.store.exists(sha256)
        finally:
            checking.now = False
        if stored:
            a_stored.set()
            assert b_done.wait(30)

    def fail_b(*_args: Any) -> None:
        if threading.current_thread().name == "upload-b":
            raise Injected("B's commit")

    def upload(name: str, errors: list[BaseException]) -> None:
        try:
            with runtime.sessions() as session:
                service.register_version(session, runtime.store, name, data,
                                         VersionSpec(fmt="pickle", feature_names=["a", "b", "c", "d"]))
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
        version = refs.resolve_version(session, "alpha", "latest")
        assert version.sha256 == sha256
        assert queries.load_estimator(runtime.store, version).estimator.predict([[5.1, 3.5, 1.4, 0.2]]) is not None


def test_an_upload_killed_between_blob_and_row_leaves_an_orphan_that_gc_removes(tmp_path: Path) -> None:
    """SIGKILL to the real server while its upload has stored the blob and waits for the
    database (this test holds SQLite's write lock); `modelyard gc` then finds the orphan and
    removes it, and nothing a version uses."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import threading
    import time
    import urllib.request
    import uuid

    from tests.serve_helpers import answers, free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(MODELYARD_DATABASE_URL=f"sqlite:///{tmp_path / 'registry.db'}",
               MODELYARD_ARTIFACTS_ROOT=str(tmp_path / "artifacts"),
               MODELYARD_CACHE_MAPPED_ROOT=str(tmp_path / "mapped"),
               MODELYARD_AUTH_ADMIN_TOKEN_FILE=str(tmp_path / "admin.token"), MODELYARD_SERVER_PORT=str(port))
    server = subprocess.Popen([sys.executable, "-m", "modelyard.cli", "serve", "--workers", "1"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "admin.token").exists() or not answers(f"http://127.0.0.1:{port}"):
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        blobs = set((tmp_path / "artifacts" / "sha256").glob("??/*"))
        data = pickle.dumps(fitted_logreg())
        digest = hashlib.sha256(data).hexdigest()
        orphan = tmp_path / "artifacts" / "sha256" / digest[:2] / digest
        lock = sqlite3.connect(tmp_path / "registry.db", timeout=30)
        lock.execute("BEGIN IMMEDIATE")  # the upload's commit must wait behind this
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.pkl\"\r\n\r\n".encode()
                + data + f"\r\n--{boundary}--\r\n".encode())
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/models/doomed/versions", data=body, method="POST",
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                     "Authorization": f"Bearer {(tmp_path / 'admin.token').read_text().strip()}"})
        threading.Thread(target=_send_ignoring_errors, args=(request,), daemon=True).start()
        deadline = time.monotonic() + 60
        while not orphan.exists():
            assert time.monotonic() < deadline, "the upload never stored its blob"
            time.sleep(0.01)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)
        lock.rollback()
        lock.close()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    with sqlite3.connect(tmp_path / "registry.db") as db:
        assert db.execute("SELECT count(*) FROM models WHERE name = 'doomed'").fetchone() == (0,)
    assert orphan.exists()  # the crash left it

    def gc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(Path(sys.executable).parent / "modelyard"), "gc", *args], env=env,
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    spared = gc()  # the default grace period spares a blob this fresh: it may be an upload in flight
    assert spared.returncode == 0 and spared.stdout.startswith("removed 0 orphan blobs")
    dry = gc("--grace-seconds", "0", "--dry-run")
    assert dry.stdout.splitlines()[:2] == ["would remove 1 orphan blob", f"  {orphan.name}"]
    assert orphan.exists()
    done = gc("--grace-seconds", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["removed 1 orphan blob", f"  {orphan.name}"]
    assert not orphan.exists()
    assert set((tmp_path / "artifacts" / "sha256").glob("??/*")) == blobs  # iris's blob is kept


def _send_ignoring_errors(request: Any) -> None:
    import urllib.request

    try:
        urllib.request.urlopen(request, timeout=60).read()
    except OSError:
        pass  # the server is killed under it


def test_the_start_removes_old_orphans_and_partial_writes_but_spares_fresh_ones(config: dict[str, Any]) -> None:
    import datetime as dt
    import os
    import time

    from sqlalchemy import update

    from modelyard.app import create_app
    from modelyard.registry.db import make_engine, upgrade_to_head
    from modelyard.registry.models import ArtifactBlob
    from modelyard.registry.storage import make_store
    from modelyard.web.context import EXTENSION

    engine = make_engine(config["database"]["url"])
    upgrade_to_head(engine)
    store = make_store(config["artifacts"]["store"], config["artifacts"]["root"], engine)
    old = store.put(b"left by an upload killed two hours ago")
    fresh = store.put(b"an upload still committing")
    two_hours_ago = time.time() - 7200
    partial = None
    if isinstance(store, LocalArtifactStore):
        os.utime(store.path_for(old), (two_hours_ago, two_hours_ago))
        partial = store.path_for(old).parent / ".tmp-killed"
        partial.write_bytes(b"half")
        os.utime(partial, (two_hours_ago, two_hours_ago))
    else:  # a put killed half-way is a rolled-back transaction: only whole orphans can be left
        with engine.begin() as conn:
            conn.execute(update(ArtifactBlob).where(ArtifactBlob.sha256 == old)
                         .values(last_put=dt.datetime.fromtimestamp(two_hours_ago, dt.UTC)))
    app = create_app(config)
    app.extensions[EXTENSION].engine.dispose()
    assert not store.exists(old) and (partial is None or not partial.exists())
    assert store.exists(fresh)
    iris = app.test_client().get("/models/iris/versions/1").json["sha256"]
    assert store.exists(iris)
    engine.dispose()


def test_putting_a_stored_blob_again_refreshes_its_time(tmp_path: Path) -> None:
    import os

    from modelyard.registry.storage import LocalArtifactStore

    store = LocalArtifactStore(tmp_path)
    sha = store.put(b"model")
    os.utime(store.path_for(sha), (1, 1))
    store.put(b"model")
    assert dict(store.digests())[sha] > 1
