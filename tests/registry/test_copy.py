"""`modelyard db copy`: a whole registry to another database, both ways between SQLite with files
and PostgreSQL with the database store; what it refuses; and the online backup of a serving
SQLite registry while uploads go on."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from modelyard.app import create_app
from modelyard.registry.copy import SameRegistry, TargetNotEmpty, copy_registry
from modelyard.registry.db import make_engine, make_session_factory
from modelyard.registry.errors import ArtifactCorrupt
from modelyard.registry.models import Event, Model, ModelVersion
from modelyard.registry.storage import make_store
from modelyard.web.context import EXTENSION, Runtime
from tests.conftest import admin_client, config_in
from tests.factories import make_version, tamper
from tests.serve_helpers import running_server, upload

MODELYARD = str(Path(sys.executable).parent / "modelyard")
ROWS = [{"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2},
        {"sepal.length": 6.7, "sepal.width": 3.0, "petal.length": 5.2, "petal.width": 2.3},
        {"sepal.length": 5.9, "sepal.width": 3.0, "petal.length": 4.2, "petal.width": 1.5}]


@pytest.fixture
def target(request: pytest.FixtureRequest, config: dict[str, dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    """The other backend from the source's: SQLite with files gets copied to a fresh PostgreSQL
    database with the database store, and PostgreSQL to a SQLite file holding its artifacts."""
    if config["database"]["url"].startswith("sqlite"):
        url, store = request.getfixturevalue("pg_url"), "database"
    else:
        url, store = f"sqlite:///{tmp_path / 'copy' / 'registry.db'}", "local"
    root = str(tmp_path / "copy" / "artifacts")
    return {"url": url, "store": store, "root": root,
            "config": config_in(tmp_path / "copy", database={"url": url}, artifacts={"store": store, "root": root},
                                serving={"seed": False})}


def _copy(runtime: Runtime, target: dict[str, Any], **kwargs: Any) -> Any:
    engine = make_engine(target["url"])
    try:
        return copy_registry(runtime.engine, runtime.store, engine, make_store(target["store"], target["root"], engine),
                             **kwargs)
    finally:
        engine.dispose()


def _fill(runtime: Runtime, client: FlaskClient) -> None:
    make_version(runtime, "flowers", description="first")
    make_version(runtime, "flowers", alias="production", metrics={"accuracy": 0.97})
    make_version(runtime, "flowers", alias="staging")
    client.patch("/models/flowers", json={"tags": {"team": "botany"}})
    assert client.post("/models/flowers/versions/3/promote").status_code == 200
    assert client.post("/models/flowers/aliases/production/rollback").json["version"] == 2
    assert client.post("/tokens", json={"name": "ci", "role": "uploader"}).status_code == 201


def _everything(client: FlaskClient) -> dict[str, Any]:
    """What a client can read of a registry, with the predictions of each version."""
    seen: dict[str, Any] = {"models": client.get("/models?page_size=100").json,
                            "tokens": client.get("/tokens").json}
    for model in seen["models"]:
        name = model["name"]
        seen[name] = {
            "versions": client.get(f"/models/{name}/versions?page_size=100").json,
            "events": client.get(f"/models/{name}/events?page_size=100").json,
            "aliases": client.get(f"/models/{name}/aliases").json,
            "tagged": [m["name"] for m in client.get("/models?tag=team:botany").json],
        }
        for version in seen[name]["versions"]:
            version.pop("serving", None)  # what this process's cache says: not registry data
            proba = "true" if version["has_proba"] else "false"
            answer = client.post(f"/models/{name}/{version['version']}/predict?proba={proba}", json=ROWS)
            assert answer.status_code == 200, answer.json
            seen[name][f"v{version['version']}"] = answer.json
    return seen


def test_a_copy_serves_the_same_registry_and_takes_new_uploads(app: Flask, client: FlaskClient, runtime: Runtime,
                                                                target: dict[str, Any]) -> None:
    _fill(runtime, client)
    report = _copy(runtime, target)
    assert report.rows["models"] == 2 and report.rows["model_versions"] == 4
    assert report.artifacts == 2  # the three flowers are the same bytes: one blob
    copied_app = create_app(target["config"])
    try:
        copied = copied_app.test_client()
        # The admin token the source wrote works on the copy: tokens are copied, hashes and all.
        copied.environ_base["HTTP_AUTHORIZATION"] = client.environ_base["HTTP_AUTHORIZATION"]
        before = _everything(client)
        assert _everything(copied) == before
        assert before["flowers"]["aliases"] == {"production": 2, "staging": 3}
        # New rows take ids after the copied ones (PostgreSQL's sequences were moved past them).
        copied_runtime = copied_app.extensions[EXTENSION]
        assert make_version(copied_runtime, "flowers").version == 4
        assert make_version(copied_runtime, "tulips").version == 1
        assert copied.post("/models/flowers/versions/4/promote").json["previous_version"] == 2
        assert [e["action"] for e in copied.get("/models/flowers/events?page_size=2").json] == [
            "alias.moved", "version.created"]
    finally:
        copied_app.extensions[EXTENSION].engine.dispose()


def test_a_non_empty_target_is_refused_unless_replaced(app: Flask, client: FlaskClient, runtime: Runtime,
                                                       target: dict[str, Any]) -> None:
    other_app = create_app({**target["config"], "serving": {"seed": False}})
    other_runtime = other_app.extensions[EXTENSION]
    try:
        make_version(other_runtime, "stale", estimator=_tree())
        with pytest.raises(TargetNotEmpty, match="1 row in models"):
            _copy(runtime, target)
        assert [m["name"] for m in admin_client(other_app).get("/models").json] == ["stale"]  # untouched
        _copy(runtime, target, replace=True)
        replaced = other_app.test_client()  # its tokens are the source's now
        assert replaced.get("/models", headers={"Authorization": "Bearer nope"}).status_code == 401
        replaced.environ_base["HTTP_AUTHORIZATION"] = client.environ_base["HTTP_AUTHORIZATION"]
        assert [m["name"] for m in replaced.get("/models").json] == ["iris"]
        # The replaced registry's artifact went with it: only the copy's blobs are left.
        assert {sha for sha, _ in other_runtime.store.digests()} == {
            v["sha256"] for v in client.get("/models/iris/versions").json}
    finally:
        other_runtime.engine.dispose()


def _tree() -> Any:
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(max_depth=2).fit(*load_iris(return_X_y=True))


def test_a_damaged_artifact_stops_the_copy_before_any_row_is_written(app: Flask, runtime: Runtime,
                                                                     target: dict[str, Any]) -> None:
    version = make_version(runtime, "flowers")
    tamper(runtime.store, version.sha256, b"not the model")
    with pytest.raises(ArtifactCorrupt):
        _copy(runtime, target)
    engine = make_engine(target["url"])
    try:
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(Model)) == 0
    finally:
        engine.dispose()


def test_the_registry_is_not_its_own_target(app: Flask, runtime: Runtime, config: dict[str, dict[str, Any]]) -> None:
    url = config["database"]["url"]
    if url.startswith("sqlite"):
        url = url.replace("sqlite:///", "sqlite:///" + os.path.relpath("/", Path.cwd()) + "/", 1)  # another spelling
    with pytest.raises(SameRegistry):
        _copy(runtime, {"url": url, "store": "local", "root": "/nonexistent"}, replace=True)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(MODELYARD_DATABASE_URL=f"sqlite:///{tmp_path / 'registry.db'}",
               MODELYARD_ARTIFACTS_ROOT=str(tmp_path / "artifacts"),
               MODELYARD_CACHE_MAPPED_ROOT=str(tmp_path / "mapped"),
               MODELYARD_AUTH_ADMIN_TOKEN_FILE=str(tmp_path / "admin.token"))
    return env


def _check_consistent(url: str) -> tuple[int, int]:
    """A backup is one moment of the registry: each model's versions, its count and its
    version.created events agree, and every artifact it names is in it, whole. Returns
    (models, versions)."""
    engine = make_engine(url)
    store = make_store("database", "", engine)
    try:
        with make_session_factory(engine)() as session:
            models = list(session.scalars(select(Model)))
            versions = 0
            for model in models:
                numbers = list(session.scalars(select(ModelVersion.version).where(ModelVersion.model_id == model.id)))
                created = session.scalar(select(func.count()).where(Event.model_name == model.name,
                                                                    Event.action == "version.created"))
                assert len(numbers) == model.version_count == created == model.last_version, model.name
                versions += len(numbers)
            for digest in session.scalars(select(ModelVersion.sha256).distinct()):
                store.open(digest)  # raises unless every byte is there and matches
        return len(models), versions
    finally:
        engine.dispose()


@pytest.mark.slow
def test_an_online_backup_of_sqlite_is_consistent_under_concurrent_uploads(tmp_path: Path) -> None:
    import pickle

    from tests.factories import fitted_logreg

    data = pickle.dumps(fitted_logreg())
    with running_server(tmp_path, workers=2) as server:
        stop = threading.Event()
        uploaded: list[str] = []
        failures: list[BaseException] = []

        def upload_forever(prefix: str) -> None:
            i = 0
            while not stop.is_set():
                try:
                    name = f"{prefix}-{i % 4}"  # new models and new versions of the same ones
                    assert upload(server["base"], server["token"], name, data)["name"] == name
                    uploaded.append(name)
                except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                    failures.append(exc)
                    return
                i += 1

        threads = [threading.Thread(target=upload_forever, args=(p,)) for p in ("a", "b")]
        for thread in threads:
            thread.start()
        try:
            seen = []
            for n in range(3):
                while len(uploaded) < 4 * (n + 1) and not failures:
                    stop.wait(0.05)
                backup = f"sqlite:///{tmp_path / f'backup-{n}.db'}"
                result = subprocess.run([MODELYARD, "db", "copy", "--to", backup], env=_env(tmp_path),
                                        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
                assert result.returncode == 0, result.stderr
                assert "every sha256 checked" in result.stdout
                seen.append(_check_consistent(backup))
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=120)
        assert not failures, failures
    # Each backup holds the uploads committed before it began, and more for each later one.
    assert [versions for _, versions in seen] == sorted(versions for _, versions in seen)
    assert seen[-1][1] > seen[0][1] > 1
    assert seen[-1][1] <= len(uploaded) + 1  # + the seeded iris


def test_the_command_says_what_it_copied_and_refuses_with_exit_1(tmp_path: Path) -> None:
    source = tmp_path / "source"
    app = create_app(config_in(source))
    app.extensions[EXTENSION].engine.dispose()
    backup = f"sqlite:///{tmp_path / 'backup.db'}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([MODELYARD, "db", "copy", *args], env=_env(source), capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)

    first = run("--to", backup)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("copied 1 models, 0 model_tags, 1 model_versions, 1 aliases, 3 events, 1 tokens; "
                                   "1 artifacts")
    assert "MODELYARD_ARTIFACTS_STORE=database" in first.stdout
    again = run("--to", backup)
    assert again.returncode == 1
    assert "not empty" in again.stderr and "--replace" in again.stderr
    assert run("--to", backup, "--replace").returncode == 0
    files = run("--to", f"sqlite:///{tmp_path / 'files.db'}", "--to-store", "local", "--to-root",
                str(tmp_path / "files"))
    assert files.returncode == 0, files.stderr
    assert len(list((tmp_path / "files").rglob("*"))) >= 1
    usage = run("--to", f"sqlite:///{tmp_path / 'x.db'}", "--to-store", "local")
    assert usage.returncode == 2 and "--to-root" in usage.stderr
