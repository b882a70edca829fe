"""/metrics from the real serve command: every family from the first scrape, and counts summed
over the workers (granian's and gunicorn's), also over a worker that was killed and replaced."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.serve_helpers import ENGINES, running_server, workers_of

SETOSA = json.dumps({"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}).encode()


@pytest.fixture(params=ENGINES)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    with running_server(tmp_path, engine=request.param) as server:
        yield server


def _scrape(served: dict[str, Any]) -> str:
    request = urllib.request.Request(f"{served['base']}/metrics",
                                     headers={"Authorization": f"Bearer {served['token']}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def _value(text: str, series: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


PREDICTS = 'modelyard_predict_requests_total{model="iris",status="200",version="1"}'


def _predict(base: str) -> int:
    request = urllib.request.Request(f"{base}/predict", data=SETOSA, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # a fresh connection each time
        return response.status


def test_every_family_shows_from_the_first_scrape(served: dict[str, Any]) -> None:
    text = _scrape(served)
    for series in ('modelyard_uploads_total{status="201"}', 'modelyard_uploads_total{status="422"}', PREDICTS,
                   "modelyard_cache_hits_total", "modelyard_cache_evictions_total"):
        assert _value(text, series) == 0.0, series


def _settled(served: dict[str, Any], expected: int) -> float | None:
    """The predict count a scrape shows once every worker has flushed (metrics.FLUSH_SECONDS:
    a worker writes its requests' counts a fraction of a second after them)."""
    deadline = time.monotonic() + 5
    while (value := _value(_scrape(served), PREDICTS)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_counts_are_summed_over_workers_and_survive_a_killed_worker(served: dict[str, Any]) -> None:
    workers = workers_of(served["master"])
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        # Until both workers have counted (each writes its own file), in rounds of 40.
        while sent < 400 and not all((served["dir"] / f"counter_{pid}.db").exists() for pid in workers):
            assert set(pool.map(lambda _: _predict(served["base"]), range(40))) == {200}
            sent += 40
            time.sleep(0.5)  # each worker's counts are written after its requests
    assert all((served["dir"] / f"counter_{pid}.db").exists() for pid in workers)
    assert _settled(served, sent) == sent

    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while (workers[0] in workers_of(served["master"]) or len(workers_of(served["master"])) < 2) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers[0] not in workers_of(served["master"]) and len(workers_of(served["master"])) == 2
    assert _value(_scrape(served), PREDICTS) == sent  # the dead worker's counts are kept
    for _ in range(10):
        assert _predict(served["base"]) == 200
    assert _settled(served, sent + 10) == sent + 10
