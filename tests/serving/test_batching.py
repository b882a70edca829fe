"""Micro-batching: concurrent single-row requests to one version share one predict call, and
every request gets exactly the answer it would have got alone."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient

from modelyard.app import create_app
from modelyard.serving.batching import Batchers, MicroBatcher
from modelyard.web.context import EXTENSION
from tests.conftest import admin_client
from tests.factories import X


class CountingModel:
    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def predict(self, rows: np.ndarray) -> np.ndarray:
        self.entered.set()
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


def _ask(batcher: MicroBatcher, predict: Any, X: np.ndarray) -> list[float]:
    with batcher.arriving() as arrival:
        return batcher.predict(predict, X, arrival).tolist()


def _gated(batcher: MicroBatcher, model: CountingModel) -> Any:
    """Request i asks for row [i, 0]; the model answers only once all have had time to queue."""

    def work(i: int) -> list[float]:
        if i == 0:
            threading.Timer(0.1, model.gate.set).start()
        return _ask(batcher, model.predict, np.array([[float(i), 0.0]]))

    return work


def test_concurrent_requests_share_calls_and_get_their_own_rows() -> None:
    model = CountingModel()
    batcher = MicroBatcher(max_rows=64, max_wait_s=0.05)
    results = _concurrently(16, _gated(batcher, model))
    assert results == [[i * 10.0] for i in range(16)]
    assert sum(model.calls) == 16
    assert len(model.calls) < 16
    assert batcher.calls == len(model.calls)


def test_a_lone_request_does_not_wait() -> None:
    model = CountingModel()
    model.gate.set()
    batcher = MicroBatcher(max_rows=64, max_wait_s=5.0)
    started = time.perf_counter()
    assert _ask(batcher, model.predict, np.array([[1.0, 0.0]])) == [10.0]
    assert batcher.predict(model.predict, np.array([[2.0, 0.0]])).tolist() == [20.0]  # not announced
    assert time.perf_counter() - started < 1.0  # far below max_wait: nobody was waited for
    assert model.calls == [1, 1]


def test_a_leader_runs_one_batch_and_passes_the_lead() -> None:
    model = CountingModel()
    batcher = MicroBatcher(max_rows=64, max_wait_s=0.0)
    first_done = threading.Event()
    results: dict[int, list[float]] = {}

    def ask(i: int) -> None:
        results[i] = batcher.predict(model.predict, np.array([[float(i), 0.0]]))
        if i == 0:
            first_done.set()

    leader = threading.Thread(target=ask, args=(0,))
    leader.start()
    assert model.entered.wait(5)  # the leader is in its predict call
    followers = [threading.Thread(target=ask, args=(i,)) for i in (1, 2, 3)]
    for t in followers:
        t.start()
    wait_for_pending(batcher, 3)
    model.gate.set()
    assert first_done.wait(5)  # the first request is answered after its own batch
    for t in [leader, *followers]:
        t.join(5)
    assert results == {i: [i * 10.0] for i in range(4)}
    assert model.calls == [1, 3]  # the three that queued meanwhile went together, led by one of them


def wait_for_pending(batcher: MicroBatcher, count: int) -> None:
    """Until ``count`` requests are queued behind a leader's call (at most 5 s)."""
    deadline = time.monotonic() + 5
    while len(batcher._pending) < count and time.monotonic() < deadline:
        time.sleep(0.001)


def test_leaders_expect_as_many_as_the_last_batch_until_load_drops() -> None:
    model = CountingModel()
    batcher = MicroBatcher(max_rows=64, max_wait_s=0.05)
    leader = threading.Thread(target=batcher.predict, args=(model.predict, np.array([[0.0, 0.0]])))
    leader.start()
    assert model.entered.wait(5)
    followers = [threading.Thread(target=batcher.predict, args=(model.predict, np.array([[float(i), 0.0]])))
                 for i in (1, 2, 3)]
    for t in followers:
        t.start()
    wait_for_pending(batcher, 3)
    model.gate.set()
    for t in [leader, *followers]:
        t.join(5)
    assert model.calls == [1, 3]
    assert batcher._expected == 3  # under load: the next leader waits for three
    assert batcher.predict(model.predict, np.array([[7.0, 0.0]])).tolist() == [70.0]  # alone: max_wait at most
    assert batcher._expected == 1  # the load is gone: no more waiting
    assert model.calls == [1, 3, 1]


def test_versions_are_never_mixed_in_one_call() -> None:
    v1, v2 = CountingModel(), CountingModel()
    v1.gate.set()
    v2.gate.set()
    seen: list[set[float]] = []

    def tagged(model: CountingModel, tag: float) -> Any:
        def predict(rows: np.ndarray) -> np.ndarray:
            seen.append({tag})
            return model.predict(rows) + tag
        return predict

    p1, p2 = tagged(v1, 0.5), tagged(v2, 0.25)
    batcher = MicroBatcher(max_rows=64, max_wait_s=0.05)
    results = _concurrently(12, lambda i: _ask(batcher, p1 if i % 2 else p2, np.array([[float(i), 0.0]])))
    assert results == [[i * 10.0 + (0.5 if i % 2 else 0.25)] for i in range(12)]
    assert sum(v1.calls) == 6 and sum(v2.calls) == 6


def test_batches_respect_max_rows() -> None:
    model = CountingModel()
    batcher = MicroBatcher(max_rows=4, max_wait_s=0.05)
    results = _concurrently(12, _gated(batcher, model))
    assert results == [[i * 10.0] for i in range(12)]
    assert sum(model.calls) == 12
    assert max(model.calls) <= 4 and len(model.calls) >= 3


def test_a_failing_predict_reaches_every_request_of_the_batch() -> None:
    def broken(rows: np.ndarray) -> np.ndarray:
        raise ValueError("boom")

    batcher = MicroBatcher(max_rows=64, max_wait_s=0.01)

    def work(_i: int) -> str:
        try:
            _ask(batcher, broken, np.zeros((1, 2)))
        except ValueError as exc:
            return str(exc)
        return "no error"

    assert _concurrently(6, work) == ["boom"] * 6
    assert _ask(batcher, lambda rows: rows[:, 0], np.ones((1, 2))) == [1.0]  # and it keeps serving


def test_rows_the_estimator_refuses_fail_only_their_own_request() -> None:
    """A batch that raises is answered request by request: one request's bad row (an unknown
    category, say) does not fail the requests batched with it."""
    model = CountingModel()

    def picky(rows: np.ndarray) -> np.ndarray:
        if (rows[:, 0] == 3).any():
            raise ValueError("found unknown category 3")
        return model.predict(rows)

    batcher = MicroBatcher(max_rows=64, max_wait_s=0.05)

    def work(i: int) -> Any:
        if i == 0:
            threading.Timer(0.1, model.gate.set).start()
        try:
            return _ask(batcher, picky, np.array([[float(i), 0.0]]))
        except ValueError as exc:
            return str(exc)

    assert _concurrently(6, work) == [[0.0], [10.0], [20.0], "found unknown category 3", [40.0], [50.0]]


def test_a_request_that_fails_to_decode_does_not_stall_the_batcher() -> None:
    model = CountingModel()
    model.gate.set()
    batcher = MicroBatcher(max_rows=64, max_wait_s=5.0)
    with pytest.raises(RuntimeError), batcher.arriving():
        raise RuntimeError("bad body")
    assert batcher._arriving == 0
    started = time.perf_counter()
    assert _ask(batcher, model.predict, np.array([[2.0, 0.0]])) == [20.0]
    assert time.perf_counter() - started < 1.0  # the failed request is not waited for


def test_batchers_exist_only_for_configured_models() -> None:
    batchers = Batchers(lambda name: name == "iris", max_rows=8, max_wait_s=0.001)
    assert batchers.get("other") is None
    assert batchers.get("iris") is batchers.get("iris") is not None


@pytest.fixture
def batching_client(config: dict[str, Any]) -> FlaskClient:
    return admin_client(create_app({**config, "batching": {"models": ["iris"], "max_rows": 64, "max_wait_ms": 20.0}}))


def test_batched_http_answers_equal_unbatched(batching_client: FlaskClient, client: FlaskClient) -> None:
    rows = X[::5].tolist()
    bodies = [{"inputs": [row]} for row in rows]
    alone = [client.post("/models/iris/1/predict", json=b).json for b in bodies]
    together = _concurrently(len(bodies), lambda i: batching_client.post("/models/iris/1/predict", json=bodies[i]).json)
    assert together == alone
    batcher = batching_client.application.extensions[EXTENSION].predictor.batchers.get("iris")
    assert batcher is not None and 1 <= batcher.calls <= len(bodies)
    metrics = batching_client.get("/metrics").get_data(as_text=True)
    assert "modelyard_batch_requests_count" in metrics and "modelyard_batch_rows_bucket" in metrics


def test_proba_and_bad_bodies_on_a_batched_model(batching_client: FlaskClient) -> None:
    setosa = {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}
    assert batching_client.post("/predict", json=setosa).json["predictions"] == [0]
    assert batching_client.post("/predict?proba=true", json=setosa).status_code == 422  # SVC has no proba
    assert batching_client.post("/predict", json={"sepal.length": 1}).status_code == 422
    assert batching_client.post("/predict", data="{", headers={"Content-Type": "application/json"}).status_code == 400
    assert batching_client.post("/predict", json=setosa).json["predictions"] == [0]  # nothing stalled


def test_batching_every_model_with_a_star(config: dict[str, Any]) -> None:
    """`[batching] models = ["*"]` (MODELYARD_BATCHING_MODELS=*) batches models it was never told about."""
    from tests.factories import make_version

    app = create_app({**config, "batching": {"models": ["*"], "max_rows": 64, "max_wait_ms": 20.0}})
    rt = app.extensions[EXTENSION]
    make_version(rt, "flowers")
    client = admin_client(app)
    rows = X[::10].tolist()
    answers = _concurrently(len(rows), lambda i: client.post("/models/flowers/1/predict",
                                                             json={"inputs": [rows[i]]}).json)
    assert [a["predictions"][0] for a in answers] == [int(p) for p in _logreg_predictions(rows)]
    for name in ("flowers", "iris"):
        assert rt.predictor.batchers.get(name) is not None
    assert rt.predictor.batchers.get("flowers").calls >= 1
    rt.engine.dispose()


def _logreg_predictions(rows: list[list[float]]) -> list[Any]:
    from tests.factories import fitted_logreg

    return fitted_logreg().predict(np.array(rows)).tolist()


def test_probabilities_are_batched_with_their_predictions(config: dict[str, Any]) -> None:
    """?proba=true goes through the batcher too: predict and predict_proba of a batch's rows in one
    call, each request answered its own rows of both (they were a second, unbatched call)."""
    from tests.factories import fitted_logreg, make_version

    app = create_app({**config, "batching": {"models": ["flowers"], "max_rows": 64, "max_wait_ms": 50.0}})
    rt = app.extensions[EXTENSION]
    make_version(rt, "flowers")
    client = admin_client(app)
    number, sha256 = rt.predictor.resolve(rt.sessions, "flowers", "1").pick(None)
    entry = rt.predictor.entry(rt.sessions, "flowers", number, sha256)
    estimator, proba_calls = entry.value.estimator, []
    own_proba = estimator.predict_proba
    estimator.predict_proba = lambda X: proba_calls.append(len(X)) or own_proba(X)  # counts the calls
    rows = X[::15].tolist()
    answers = _concurrently(len(rows), lambda i: client.post("/models/flowers/1/predict?proba=true",
                                                             json={"inputs": [rows[i]]}).json)
    model = fitted_logreg()
    assert [a["predictions"][0] for a in answers] == model.predict(np.array(rows)).tolist()
    np.testing.assert_allclose([a["probabilities"][0] for a in answers], model.predict_proba(np.array(rows)))
    batcher = rt.predictor.batchers.get("flowers")
    assert sum(proba_calls) == len(rows) and len(proba_calls) == batcher.calls < len(rows)
    rt.engine.dispose()
