"""The serve command for real, on each engine (granian, gunicorn): workers on a loopback port,
answering the tutorial's curl, and a stop that lets requests in flight finish."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serve_helpers import ENGINES, children_of, running_server, workers_of


def _request(url: str, body: bytes | None = None, content_type: str = "application/json") -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module", params=ENGINES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("serve")
    with running_server(tmp, engine=request.param, MODELYARD_SERVING_MAX_BODY_BYTES="20000") as running:
        yield running["base"]
    assert "Traceback" not in running["log"].read_text()


def test_tutorial_curl(server: str) -> None:
    body = b'{"sepal.lenght": 5.1, "sepal.width": 3.5, "petal.lenght": 1.4, "petal.width": 0.2}'
    status, answer = _request(f"{server}/predict", body)
    assert status == 200
    assert answer["predictions"] == [0] and answer["target_value"] == 0 and answer["labels"] == ["setosa"]


def test_virginica(server: str) -> None:
    body = json.dumps({"sepal.length": 5.9, "sepal.width": 3.0, "petal.length": 5.1, "petal.width": 1.8})
    status, answer = _request(f"{server}/predict", body.encode())
    assert status == 200 and answer["predictions"] == [2] and answer["target_value"] == 2


def test_many_requests_across_workers(server: str) -> None:
    body = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]] * 10}).encode()
    for _ in range(50):
        status, answer = _request(f"{server}/models/iris/production/predict", body)
        assert status == 200 and answer["predictions"] == [0] * 10


def test_errors_are_json_over_the_wire(server: str) -> None:
    assert _request(f"{server}/predict", b"{oops")[0] == 400
    assert _request(f"{server}/predict", b"a=1", "application/x-www-form-urlencoded")[0] == 415
    assert _request(f"{server}/models/nope/1/predict", b"{}")[0] == 404
    status, answer = _request(f"{server}/readyz")
    assert status == 200 and answer["status"] == "ready"


def test_binds_loopback_only_by_default(server: str) -> None:
    assert server.startswith("http://127.0.0.1:")
    port = int(server.rsplit(":", 1)[1])
    # Linux routes all of 127/8 to loopback: a server bound to 0.0.0.0 would answer here too.
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.2", port)) != 0, "reachable on 127.0.0.2: bound beyond 127.0.0.1"
    addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    for address in addresses - {"127.0.0.1"}:
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex((address, port)) != 0, f"reachable on {address}"


def test_bad_config_stops_the_start_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env["MODELYARD_SERVER_WORKERS"] = "many"
    result = subprocess.run([sys.executable, "-m", "modelyard.cli", "serve"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "modelyard: configuration error: MODELYARD_SERVER_WORKERS: expected int, got 'many'"
    )


def test_a_port_in_use_stops_the_start_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(MODELYARD_DATABASE_URL=f"sqlite:///{tmp_path / 'registry.db'}",
               MODELYARD_ARTIFACTS_ROOT=str(tmp_path / "artifacts"),
               MODELYARD_CACHE_MAPPED_ROOT=str(tmp_path / "mapped"),
               MODELYARD_AUTH_ADMIN_TOKEN_FILE=str(tmp_path / "admin.token"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "modelyard.cli", "serve", "--port", str(port)], env=env,
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"modelyard: configuration error: [server] port {port} on 127.0.0.1 is already in use; "
        "choose another with --port or MODELYARD_SERVER_PORT"
    )
    assert time.monotonic() - started < 20  # no retries
    assert not (tmp_path / "registry.db").exists()  # refused before anything was prepared


def _chunked(server: str, chunks: list[bytes]) -> tuple[int, Any]:
    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/predict", body=iter(chunks), encode_chunked=True,
                     headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_body_limit_with_and_without_a_declared_length(server: str) -> None:
    rows = json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]] * 1500}).encode()  # ~33 KB, over the 20 KB limit
    status, answer = _request(f"{server}/predict", rows)
    assert status == 413 and answer["errors"]["max_body_bytes"] == 20000
    status, answer = _chunked(server, [rows[i:i + 4096] for i in range(0, len(rows), 4096)])
    assert status == 413 and answer["code"] == 413, answer
    # A refused body well past the limit is still read to its end (within DRAIN_MAX_BYTES), so
    # the client reads the 413 instead of a broken pipe: before that, one in a hundred 33 KB
    # chunked bodies and nearly every 130 KB one met a reset on granian.
    big = json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]] * 20000}).encode()  # ~440 KB
    for _ in range(5):
        status, answer = _chunked(server, [big[i:i + 4096] for i in range(0, len(big), 4096)])
        assert status == 413 and answer["code"] == 413, answer
        status, answer = _request(f"{server}/predict", big)
        assert status == 413 and answer["errors"]["max_body_bytes"] == 20000
    small = json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]] * 3}).encode()
    status, answer = _chunked(server, [small[:10], small[10:]])
    assert status == 200 and answer["predictions"] == [0, 0, 0]


def test_a_malformed_chunked_body_is_a_json_400(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["code"] == 400


@pytest.mark.parametrize("engine", ENGINES)
def test_sigterm_lets_a_request_in_flight_finish(tmp_path: Path, engine: str) -> None:
    """An upload whose body is still arriving when SIGTERM comes must not be cut: it answers 201
    and the server then exits cleanly."""
    import pickle
    import signal

    from tests.factories import fitted_logreg

    with running_server(tmp_path, engine=engine) as running:
        body = _multipart({"file": ("m.pkl", pickle.dumps(fitted_logreg()))})
        host, port = running["base"].removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.sendall(f"POST /models/late/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         f"Content-Type: multipart/form-data; boundary={_BOUNDARY}\r\n"
                         f"Authorization: Bearer {running['token']}\r\nContent-Length: {len(body)}\r\n\r\n"
                         .encode() + body[:100])
            time.sleep(0.5)  # the request is in a worker, reading its body
            running["process"].send_signal(signal.SIGTERM)
            time.sleep(0.5)
            sock.sendall(body[100:])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
        assert running["process"].wait(timeout=60) == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_the_trial_sandbox_is_warm_before_the_first_upload(tmp_path: Path, engine: str) -> None:
    """The master forks the sandbox's zygote before its workers: it is there before any upload,
    every worker's trials run under it, and no worker starts an interpreter of its own."""
    import pickle

    from tests.factories import fitted_logreg

    with running_server(tmp_path, engine=engine) as running:
        zygotes = [pid for pid, name in children_of(running["master"]) if name == "trial-zygote"]
        assert len(zygotes) == 1
        for _ in range(4):  # with two workers, both are all but certain to take one
            request = urllib.request.Request(
                f"{running['base']}/models/warm/versions", method="POST",
                data=_multipart({"file": ("m.pkl", pickle.dumps(fitted_logreg()))}),
                headers={"Content-Type": f"multipart/form-data; boundary={_BOUNDARY}",
                         "Authorization": f"Bearer {running['token']}"})
            with urllib.request.urlopen(request, timeout=60) as response:
                assert response.status == 201
        assert [pid for pid, name in children_of(running["master"]) if name == "trial-zygote"] == zygotes
        for worker in workers_of(running["master"]):
            tasks = Path(f"/proc/{worker}/task")
            spawned = [pid for path in tasks.glob("*/children") for pid in path.read_text().split()]
            assert spawned == [], "a worker started a sandbox of its own"


_BOUNDARY = "b0undary"


def _multipart(files: dict[str, tuple[str, bytes]]) -> bytes:
    parts = [f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"; filename="{name}"\r\n\r\n'.encode()
             + data + b"\r\n" for key, (name, data) in files.items()]
    return b"".join(parts) + f"--{_BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("threads", ["1", "4"])
def test_micro_batching_with_one_thread_a_worker_is_named_at_start(tmp_path: Path, threads: str) -> None:
    """One thread per worker (the default) never holds two requests to batch: the start says so,
    and the model still answers."""
    with running_server(tmp_path, workers=1, MODELYARD_BATCHING_MODELS="iris", MODELYARD_SERVER_THREADS=threads) as on:
        assert _request(on["base"] + "/predict", json.dumps(
            {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}).encode()) == (
            200, {"model": "iris", "version": 1, "predictions": [0], "labels": ["setosa"], "target_value": 0})
        log = on["log"].read_text()
    warned = "micro-batching is on for iris but [server] threads = 1" in log
    assert warned is (threads == "1"), log
