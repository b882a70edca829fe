"""Micro-batching: concurrent single-row requests to one version share one predict call, and
every request gets exactly the answer it would have got alone."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient

from modelyard.app import create_app
from modelyard.runtime import EXTENSION
from serving.batching import MicroBatcher
from serving.service import cache_key
from tests.conftest import admin_client
from tests.factories import X


class CountingModel:
    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()

    def predict(self, rows: np.ndarray) -> np.ndarray:
        self.gate.wait(5)
        self.calls.append(len(rows))
        return rows[:, 0] * 10


def _concurrently(n: int, work: Any) -> list[Any]:
    results: list[Any] = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_requests_share_calls_and_get_their_own_rows() -> None:
    model = CountingModel()
    batcher = MicroBatcher(model.predict, max_rows=64, max_wait_s=0.05)

    def work(i: int) -> list[float]:
        with batcher.arriving():
            if i == 0:
                threading.Timer(0.1, model.gate.set).start()
            return batcher.predict(np.array([[float(i), 0.0]])).tolist()

    results = _concurrently(16, work)
    assert results == [[i * 10.0] for i in range(16)]
    assert sum(model.calls) == 16
    assert len(model.calls) < 16


def test_a_lone_request_does_not_wait() -> None:
    model = CountingModel()
    model.gate.set()
    batcher = MicroBatcher(model.predict, max_rows=64, max_wait_s=5.0)
    with batcher.arriving():
        assert batcher.predict(np.array([[1.0, 0.0]])).tolist() == [10.0]
    assert model.calls == [1]


def test_batches_respect_max_rows() -> None:
    model = CountingModel()
    batcher = MicroBatcher(model.predict, max_rows=4, max_wait_s=0.05)

    def work(i: int) -> list[float]:
        with batcher.arriving():
            if i == 0:
                threading.Timer(0.1, model.gate.set).start()
            return batcher.predict(np.array([[float(i), 0.0]])).tolist()

    results = _concurrently(12, work)
    assert results == [[i * 10.0] for i in range(12)]
    assert sum(model.calls) == 12
    assert max(model.calls) <= 4 and len(model.calls) >= 3


def test_a_failing_predict_reaches_every_request_of_the_batch() -> None:
    def broken(rows: np.ndarray) -> np.ndarray:
        raise ValueError("boom")

    batcher = MicroBatcher(broken, max_rows=64, max_wait_s=0.01)

    def work(_i: int) -> str:
        try:
            with batcher.arriving():
                batcher.predict(np.zeros((1, 2)))
        except ValueError as exc:
            return str(exc)
        return "no error"

    assert _concurrently(6, work) == ["boom"] * 6


def test_a_request_that_fails_to_decode_does_not_stall_the_batcher() -> None:
    model = CountingModel()
    model.gate.set()
    batcher = MicroBatcher(model.predict, max_rows=64, max_wait_s=5.0)
    with pytest.raises(RuntimeError):
        with batcher.arriving():
            raise RuntimeError("bad body")
    with batcher.arriving():
        assert batcher.predict(np.array([[2.0, 0.0]])).tolist() == [20.0]  # answers at once


@pytest.fixture
def batching_client(config: dict[str, Any]) -> FlaskClient:
    return admin_client(create_app({**config, "batching": {"models": ["iris"], "max_rows": 64, "max_wait_ms": 20.0}}))


def test_batched_http_answers_equal_unbatched(batching_client: FlaskClient, client: FlaskClient) -> None:
    rows = X[::5].tolist()
    bodies = [{"inputs": [row]} for row in rows]
    alone = [client.post("/models/iris/1/predict", json=b).json for b in bodies]
    together = _concurrently(len(bodies), lambda i: batching_client.post("/models/iris/1/predict", json=bodies[i]).json)
    assert together == alone
    app = batching_client.application
    rt = app.extensions[EXTENSION]
    version = batching_client.get("/models/iris/versions/1").json
    batcher = rt.cache.peek(cache_key("iris", 1, version["sha256"])).value.batcher
    assert batcher is not None and batcher.calls <= len(bodies)


def test_proba_and_other_models_are_not_batched(batching_client: FlaskClient) -> None:
    response = batching_client.post("/predict", json={"sepal.length": 5.1, "sepal.width": 3.5,
                                                      "petal.length": 1.4, "petal.width": 0.2})
    assert response.json["predictions"] == [0]
    assert batching_client.post("/predict?proba=true", json={"sepal.length": 1}).status_code == 422
