"""Version numbers under concurrent uploads: N uploads get exactly 1..N, no gap, no duplicate,
no 5xx; with threads in one process and with several processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import multiprocessing
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from modelyard.app import create_app
from modelyard.web.context import EXTENSION
from tests.conftest import admin_client
from tests.factories import fitted_logreg

N = 20


def _upload(app: Flask, name: str, data: bytes) -> tuple[int, Any]:
    response = admin_client(app).post(
        f"/models/{name}/versions",
        data={"file": (io.BytesIO(data), "m.pkl")},
        content_type="multipart/form-data",
    )
    return response.status_code, response.json


def _check(app: Flask, name: str, results: list[tuple[int, Any]]) -> None:
    assert [status for status, _ in results] == [201] * N, [body for _, body in results if body]
    numbers = sorted(body["version"] for _, body in results)
    assert numbers == list(range(1, N + 1))
    listed = admin_client(app).get(f"/models/{name}/versions?page_size=100").json
    assert sorted(v["version"] for v in listed) == numbers
    events = admin_client(app).get(f"/models/{name}/events?page_size=100").json
    assert [e["action"] for e in events].count("model.created") == 1


def _threads(app: Flask, name: str) -> list[tuple[int, Any]]:
    data = pickle.dumps(fitted_logreg())
    results: list[tuple[int, Any]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(N)

    def worker() -> None:
        barrier.wait()
        outcome = _upload(app, name, data)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _process_worker(config: dict[str, Any], name: str, count: int, start: Any, queue: Any) -> None:
    app = create_app(config, prepare=False)
    data = pickle.dumps(fitted_logreg())
    start.wait()
    for _ in range(count):
        queue.put(_upload(app, name, data))
    app.extensions[EXTENSION].engine.dispose()


def _processes(config: dict[str, Any], name: str, workers: int = 4) -> list[tuple[int, Any]]:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    queue = context.Queue()
    procs = [context.Process(target=_process_worker, args=(config, name, N // workers, start, queue))
             for _ in range(workers)]
    for p in procs:
        p.start()
    start.set()
    results = [queue.get(timeout=120) for _ in range(N)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


@pytest.fixture
def pg_config(pg_url: str, tmp_path: Path) -> dict[str, Any]:
    return {"database": {"url": pg_url}, "artifacts": {"root": str(tmp_path / "artifacts")},
            "auth": {"admin_token_file": str(tmp_path / "admin.token")}}


def test_concurrent_uploads_to_an_existing_model_with_threads(app: Flask) -> None:
    assert admin_client(app).post("/models", json={"name": "racing"}).status_code == 201
    _check(app, "racing", _threads(app, "racing"))


def test_concurrent_uploads_with_threads_new_model(app: Flask) -> None:
    _check(app, "racing", _threads(app, "racing"))


def test_concurrent_uploads_with_processes(config: dict[str, Any]) -> None:
    app = create_app(config)
    _check(app, "racing", _processes(config, "racing"))
    app.extensions[EXTENSION].engine.dispose()


def test_concurrent_uploads_with_processes_on_postgresql_with_local_artifacts(pg_config: dict[str, Any]) -> None:
    """The one combination ``config`` does not give: PostgreSQL with the artifacts on a disk."""
    app = create_app(pg_config)
    _check(app, "racing", _processes(pg_config, "racing"))
    app.extensions[EXTENSION].engine.dispose()
