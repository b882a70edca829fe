"""/metrics from the real serve command: every family from the first scrape, and counts summed
over the gunicorn workers, also over a worker that was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.test_serve import _free_port

SETOSA = json.dumps({"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}).encode()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    port = _free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(MODELYARD_DATABASE_URL=f"sqlite:///{tmp_path / 'registry.db'}",
               MODELYARD_ARTIFACTS_ROOT=str(tmp_path / "artifacts"),
               MODELYARD_AUTH_ADMIN_TOKEN_FILE=str(tmp_path / "admin.token"),
               MODELYARD_SERVER_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "modelyard.cli", "serve", "--workers", "2"], env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while len(_workers(process.pid)) < 2 or not _up(base):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"server did not start:\n{(tmp_path / 'server.log').read_text()}")
        time.sleep(0.2)
    token = (tmp_path / "admin.token").read_text().strip()
    yield {"base": base, "token": token, "master": process.pid, "dir": metrics_dir}
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    finally:
        process.kill()
        log.close()


def _up(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _workers(master: int) -> list[int]:
    """The gunicorn workers: the master's children running the same command line."""
    own = Path(f"/proc/{master}/cmdline").read_bytes()
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == master and (stat.parent / "cmdline").read_bytes() == own:
                children.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return children


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


def test_counts_are_summed_over_workers_and_survive_a_killed_worker(served: dict[str, Any]) -> None:
    workers = _workers(served["master"])
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        # Until both workers have counted (each writes its own file), in rounds of 40.
        while sent < 400 and not all((served["dir"] / f"counter_{pid}.db").exists() for pid in workers):
            assert set(pool.map(lambda _: _predict(served["base"]), range(40))) == {200}
            sent += 40
    assert all((served["dir"] / f"counter_{pid}.db").exists() for pid in workers)
    assert _value(_scrape(served), PREDICTS) == sent

    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while (workers[0] in _workers(served["master"]) or len(_workers(served["master"])) < 2) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers[0] not in _workers(served["master"]) and len(_workers(served["master"])) == 2
    assert _value(_scrape(served), PREDICTS) == sent  # the dead worker's counts are kept
    for _ in range(10):
        assert _predict(served["base"]) == 200
    assert _value(_scrape(served), PREDICTS) == sent + 10
