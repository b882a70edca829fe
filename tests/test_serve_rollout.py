"""Guarded canaries on real servers: two `modelyard serve` processes on one PostgreSQL behind nginx,
under load. A broken candidate is rolled back by the servers themselves inside its window, once;
a guard with too few samples to judge leaves its canary alone."""

from __future__ import annotations

import http.client
import json
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from tests.test_serve_cluster import behind_nginx, call

pytestmark = pytest.mark.slow

CODES = np.array([[a, b] for a in range(3) for b in range(3)] * 4, dtype=float)
LABELS = (CODES[:, 0] + CODES[:, 1] > 2).astype(int)
UNSEEN = json.dumps({"inputs": [[7, 1]]}).encode()  # a category no encoder saw: the candidate refuses it
WINDOW = 30


def _upload(front: dict[str, Any], name: str, unknown: str) -> None:
    estimator = make_pipeline(OneHotEncoder(handle_unknown=unknown), LogisticRegression()).fit(CODES, LABELS)
    boundary = "rollout0boundary"
    parts = [("file", pickle.dumps(estimator), 'filename="m.pkl"'), ("example", b"[[0, 1], [2, 2]]", ""),
             ("features", b'["a", "b"]', "")]
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"{"; " + extra if extra else ""}'
                    f"\r\n\r\n".encode() + data + b"\r\n" for field, data, extra in parts)
    status, answer = call(front, "POST", f"/models/{name}/versions", body + f"--{boundary}--\r\n".encode(),
                          f"multipart/form-data; boundary={boundary}")
    assert status == 201, answer


def test_a_broken_candidate_is_rolled_back_under_load_inside_its_window_and_an_inconclusive_one_stays(
        tmp_path: Path, pg_url: str) -> None:
    with behind_nginx(tmp_path, pg_url, "lb") as (a, b, front):
        for name in ("shop", "calm"):
            _upload(front, name, "ignore")
            _upload(front, name, "error")
            assert call(front, "POST", f"/models/{name}/versions/1/promote")[0] == 200
        rule = {"metric": "error_rate", "max": 0.05, "window_seconds": WINDOW, "min_samples": 50}
        for name, samples in (("shop", 50), ("calm", 10**6)):
            status, moved = call(front, "PUT", f"/models/{name}/aliases/production", json.dumps(
                {"weights": {"1": 80, "2": 20}, "guard": {**rule, "min_samples": samples}}).encode())
            assert status == 200 and moved["guard"]["min_samples"] == samples, moved

        answers: dict[str, list[tuple[float, int, str]]] = {"shop": [], "calm": []}
        stop = threading.Event()
        host, port = front["base"].removeprefix("http://").split(":")

        def load(name: str) -> None:
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            while not stop.is_set():
                conn.request("POST", f"/models/{name}/production/predict", body=UNSEEN,
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                answers[name].append((time.monotonic(), response.status, response.getheader("X-Model-Version")))
            conn.close()

        threads = [threading.Thread(target=load, args=(name,)) for name in ("shop", "calm", "shop", "calm")]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        tripped_at = None
        try:
            while time.monotonic() - started < WINDOW:
                if call(front, "GET", "/models/shop/aliases")[1] == {"production": 1}:
                    tripped_at = time.monotonic()
                    break
                time.sleep(0.2)
            time.sleep(3)  # load goes on after the trip: every server serves version 1 alone
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)

        assert tripped_at is not None and tripped_at - started < WINDOW, "the guard did not trip inside its window"
        after = [(status, version) for sent, status, version in answers["shop"] if sent > tripped_at + 0.5]
        assert after and set(after) == {(200, "1")}
        refused = [1 for _, status, version in answers["shop"] if status == 422 and version is None]
        assert len(refused) >= 50  # the candidate's failures the guard counted, answered as 422s
        events = [e for e in call(front, "GET", "/models/shop/events?page_size=100")[1]
                  if e["action"] == "alias.guard_tripped"]
        assert len(events) == 1, events  # two servers, four workers: tripped once
        assert events[0]["actor"] == "guard" and events[0]["after"]["tripped"]["version"] == 2
        assert events[0]["after"]["tripped"]["value"] > 0.05 and events[0]["after"]["version"] == 1

        calm = call(front, "GET", "/models/calm/aliases/production/guard")[1]
        assert calm["verdict"] == "inconclusive" and calm["candidates"]["2"]["errors"] > 50, calm
        assert call(front, "GET", "/models/calm/aliases")[1]["production"]["weights"] == {"1": 80, "2": 20}
        assert {status for _, status, _ in answers["calm"]} == {200, 422}
        trips = [line for server in (a, b) for line in call(server, "GET", "/metrics")[1].decode().splitlines()
                 if line.startswith("modelyard_guard_trips_total{")]
        assert trips == ['modelyard_guard_trips_total{alias="production",metric="error_rate",model="shop"} 1.0']


def test_webhooks_reach_a_loopback_receiver_once_each_even_when_a_server_dies_before_sending(
        tmp_path: Path, pg_url: str) -> None:
    """Two servers on one PostgreSQL. Server A records events while the receiver is down, and is
    killed (SIGKILL, master and workers) before any of them is delivered; the receiver comes up,
    and server B delivers them from the outbox. More events through both servers: each arrives
    exactly once, with a signature the Standard Webhooks library accepts."""
    import base64
    import os
    import signal

    from tests.serve_helpers import children_of, free_port, running_server
    from tests.webhook_receiver import receiving

    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    port = free_port()  # the receiver's, not listening yet
    settings = {"MODELYARD_ARTIFACTS_STORE": "database", "MODELYARD_WEBHOOKS_ALLOW_PRIVATE": "true",
                "MODELYARD_WEBHOOKS_BACKOFF_SECONDS": "0.5", "MODELYARD_WEBHOOKS_POLL_SECONDS": "0.2",
                "MODELYARD_WEBHOOKS_MAX_ATTEMPTS": "30"}
    for side in "abc":
        (tmp_path / side).mkdir()
    token_file = str(tmp_path / "a" / "admin.token")
    with running_server(tmp_path / "a", database_url=pg_url, **settings) as a:
        status, hook = call(a, "POST", "/webhooks", json.dumps(
            {"url": f"http://127.0.0.1:{port}/hook", "events": ["version.created", "alias.set", "alias.moved"],
             "secret": secret}).encode())
        assert status == 201, hook
        _upload(a, "hooked", "ignore")
        _upload(a, "hooked", "ignore")
        assert call(a, "POST", "/models/hooked/versions/1/promote")[0] == 200
        for pid in [pid for pid, _ in children_of(a["master"])] + [a["master"]]:
            os.kill(pid, signal.SIGKILL)  # committed, not delivered: the receiver is not up
    log = (tmp_path / "a" / "server.log").read_text()

    with receiving(port) as receiver, running_server(tmp_path / "b", database_url=pg_url, **settings,
                                                      MODELYARD_AUTH_ADMIN_TOKEN_FILE=token_file) as b, \
            running_server(tmp_path / "c", database_url=pg_url, **settings,
                           MODELYARD_AUTH_ADMIN_TOKEN_FILE=token_file) as c:
        for server, target in ((b, 2), (c, 1), (b, 2), (c, 1)):
            assert call(server, "POST", f"/models/hooked/versions/{target}/promote")[0] == 200
        # A's three wait out the backoff its failed attempts left them (doubling from 0.5 s); the
        # moves through B and C are due at once: the order of arrival is not the events' order.
        deadline = time.monotonic() + 60
        while len(receiver.received) < 7 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)  # time for a duplicate to show, if one were sent
        got = receiver.verified(secret)
        status, deliveries = call(b, "GET", f"/webhooks/{hook['id']}/deliveries?page_size=50")
    by_event = sorted((g["data"]["id"], g["type"]) for g in got)
    expected = ["version.created", "version.created", "alias.set"] + ["alias.moved"] * 4
    assert [kind for _, kind in by_event] == expected, (by_event, log)
    assert len({event for event, _ in by_event}) == len(got) == 7  # each event once
    assert len({g["_id"] for g in got}) == 7
    assert status == 200 and {d["status"] for d in deliveries} == {"delivered"} and len(deliveries) == 7
