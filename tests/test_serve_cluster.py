"""Several servers, one registry: two real `modelyard serve` processes on their own ports against
one PostgreSQL, artifacts in the database, no shared directory."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sklearn.linear_model import LogisticRegression

from tests.factories import X, fitted_logreg, y
from tests.serve_helpers import running_server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent

SETOSA = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}


@contextlib.contextmanager
def two_servers(tmp_path: Path, pg_url: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Server A creates the registry (and the admin token); B joins it. Each has its own
    directory; neither has an artifact directory the other could read."""
    shared = {"MODELYARD_ARTIFACTS_STORE": "database"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with running_server(tmp_path / "a", database_url=pg_url, **shared) as a, \
            running_server(tmp_path / "b", database_url=pg_url, **shared,
                           MODELYARD_AUTH_ADMIN_TOKEN_FILE=str(tmp_path / "a" / "admin.token")) as b:
        yield a, b
    for side in ("a", "b"):
        assert not (tmp_path / side / "artifacts").exists() or not any((tmp_path / side / "artifacts").rglob("*"))
        assert "Traceback" not in (tmp_path / side / "server.log").read_text()


def call(server: dict[str, Any], method: str, path: str, body: bytes | None = None,
         content_type: str = "application/json") -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {server['token']}"}
    if body is not None:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(f"{server['base']}{path}", data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    if not raw:
        return status, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def upload(server: dict[str, Any], name: str, data: bytes) -> tuple[int, Any]:
    boundary = "cluster0boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.pkl"\r\n\r\n'.encode()
            + data + f"\r\n--{boundary}--\r\n".encode())
    return call(server, "POST", f"/models/{name}/versions", body, f"multipart/form-data; boundary={boundary}")


def predict(server: dict[str, Any], name: str, ref: str) -> tuple[int, Any]:
    return call(server, "POST", f"/models/{name}/{ref}/predict", json.dumps(SETOSA).encode())


def test_two_servers_on_one_postgresql_serve_one_registry(tmp_path: Path, pg_url: str) -> None:
    with two_servers(tmp_path, pg_url) as (a, b):
        first = pickle.dumps(fitted_logreg())
        status, version = upload(a, "shared", first)
        assert status == 201 and version["version"] == 1, version
        # Uploaded through A, served and downloaded through B: the bytes came from the database.
        status, answer = predict(b, "shared", "1")
        assert status == 200 and answer["version"] == 1 and answer["predictions"] == [0]
        status, blob = call(b, "GET", "/models/shared/versions/1/artifact")
        assert status == 200 and blob == first

        second = pickle.dumps(LogisticRegression(C=0.01, max_iter=500).fit(X, y))
        assert upload(a, "shared", second)[0] == 201
        assert call(a, "POST", "/models/shared/versions/1/promote")[0] == 200
        assert predict(b, "shared", "production")[1]["version"] == 1
        # A promotion through A is answered by B on its very next request.
        for ref in ("2", "1", "2"):
            assert call(a, "POST", f"/models/shared/versions/{ref}/promote")[0] == 200
            assert predict(b, "shared", "production")[1]["version"] == int(ref)
        assert call(b, "POST", "/models/shared/aliases/production/rollback")[0] == 200
        assert predict(a, "shared", "production")[1]["version"] == 1

        # Deleted through B: A stops serving it at once, and the blobs go with the last version.
        assert call(b, "DELETE", "/models/shared")[0] == 204
        assert predict(a, "shared", "production")[0] == 404
        assert predict(a, "shared", "2")[0] == 404
        assert call(a, "GET", "/models/shared")[0] == 404
        status, detail = call(a, "GET", "/models/iris/versions/1")
        assert status == 200
        assert _blob_digests(pg_url) == {detail["sha256"]}


def test_concurrent_uploads_through_both_servers_get_gapless_numbers(tmp_path: Path, pg_url: str) -> None:
    with two_servers(tmp_path, pg_url) as (a, b):
        numbers: list[int] = []
        failures: list[Any] = []
        lock = threading.Lock()

        def send(server: dict[str, Any], seed: int) -> None:
            data = pickle.dumps(LogisticRegression(C=1 + seed, max_iter=500).fit(X, y))
            status, answer = upload(server, "busy", data)
            with lock:
                if status == 201:
                    numbers.append(answer["version"])
                else:
                    failures.append((status, answer))

        threads = [threading.Thread(target=send, args=((a, b)[i % 2], i)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert failures == []
        assert sorted(numbers) == list(range(1, 13))
        status, versions = call(b, "GET", "/models/busy/versions?page_size=50")
        assert status == 200 and sorted(v["version"] for v in versions) == list(range(1, 13))
        assert len({v["sha256"] for v in versions}) == 12


def _blob_digests(pg_url: str) -> set[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(text("SELECT sha256 FROM artifact_blobs"))}
    finally:
        engine.dispose()


def test_a_large_model_goes_through_the_database_in_chunks(tmp_path: Path, pg_url: str) -> None:
    """A few MiB: several chunks each way, and the upload mapped from its temporary file."""
    import numpy as np
    from sklearn.neighbors import KNeighborsClassifier

    rows = np.random.default_rng(0).normal(size=(60000, 4))
    model = KNeighborsClassifier(n_neighbors=3).fit(rows, (rows[:, 0] > 0).astype(int))
    data = pickle.dumps(model)
    assert len(data) > 2 << 20  # three chunks
    with two_servers(tmp_path, pg_url) as (a, b):
        status, version = upload(a, "knn", data)
        assert status == 201, version
        status, answer = call(b, "POST", "/models/knn/1/predict", json.dumps({"inputs": [[0.5, 0, 0, 0]]}).encode())
        assert status == 200 and answer["predictions"] == model.predict(np.array([[0.5, 0, 0, 0]])).tolist()
        status, blob = call(b, "GET", "/models/knn/versions/1/artifact")
        assert status == 200 and io.BytesIO(blob).getvalue() == data


def _unit() -> tuple[list[str], dict[str, str]]:
    """ExecStart and Environment of deploy/modelyard.service."""
    import shlex

    argv: list[str] = []
    env: dict[str, str] = {}
    for line in (ROOT / "deploy" / "modelyard.service").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStart":
            argv = shlex.split(value)
        elif key == "Environment":
            name, _, setting = value.partition("=")
            env[name] = setting
    return argv, env


@contextlib.contextmanager
def unit_server(directory: Path, pg_url: str, token_file: Path) -> Iterator[dict[str, Any]]:
    """A server started as deploy/modelyard.service starts it: its ExecStart (the venv's
    `modelyard` script in place of /opt/modelyard's) and Environment, with the config file it
    names written here."""
    import os
    import sys

    from tests.serve_helpers import answers, free_port, serving, workers_of

    argv, unit_env = _unit()
    assert Path(argv[0]).name == "modelyard" and argv[1:] == ["serve"]
    port = free_port()
    directory.mkdir()
    (directory / "metrics").mkdir()
    (directory / "config.toml").write_text(
        f'[database]\nurl = "{pg_url}"\n[artifacts]\nstore = "database"\n'
        f'[server]\nport = {port}\nworkers = 2\n[auth]\nadmin_token_file = "{token_file}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(unit_env, MODELYARD_CONFIG=str(directory / "config.toml"),
               PROMETHEUS_MULTIPROC_DIR=str(directory / "metrics"))
    assert set(unit_env) == {"MODELYARD_CONFIG", "PROMETHEUS_MULTIPROC_DIR"}
    base = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "modelyard"), *argv[1:]]
    with serving(command, env, directory / "server.log", cwd=directory, timeout=60,
                 ready=lambda p: len(workers_of(p.pid)) >= 2 and answers(base)) as process:
        yield {"base": base, "port": port, "token": token_file.read_text().strip(), "process": process}


@contextlib.contextmanager
def nginx_in_front(directory: Path, ports: tuple[int, int]) -> Iterator[dict[str, Any]]:
    """nginx running deploy/nginx.conf, its upstreams and listen port pointed at this test's."""
    import os
    import shutil
    import signal
    import subprocess

    from tests.serve_helpers import answers, free_port

    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        message = "nginx is not installed (Debian's nginx-light; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    directory.mkdir()
    port = free_port()
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    for old, new in (("127.0.0.1:8081", f"127.0.0.1:{ports[0]}"), ("127.0.0.1:8082", f"127.0.0.1:{ports[1]}"),
                     ("listen 8080;", f"listen 127.0.0.1:{port};")):
        assert old in site
        site = site.replace(old, new)
    (directory / "modelyard.conf").write_text(site)
    temp = "\n".join(f"    {kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                               "uwsgi", "scgi"))
    (directory / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 1;\npid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} warn;\nevents {{ worker_connections 512; }}\n"
        f"http {{\n    access_log off;\n{temp}\n    include {directory / 'modelyard.conf'};\n}}\n")
    process = subprocess.Popen([binary, "-p", str(directory), "-c", str(directory / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=open(directory / "stderr.log", "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            if answers(base) or process.poll() is not None:
                break
            threading.Event().wait(0.1)
        assert answers(base), (directory / "stderr.log").read_text() + (directory / "error.log").read_text()
        yield {"base": base}
    finally:
        process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def behind_nginx(tmp_path: Path, pg_url: str, model: str) -> Iterator[tuple[dict[str, Any], ...]]:
    """Two servers started as the systemd unit starts them, nginx in front, and ``model`` uploaded
    twice through it: ``(a, b, front)``."""
    token_file = tmp_path / "admin.token"
    with unit_server(tmp_path / "a", pg_url, token_file) as a, unit_server(tmp_path / "b", pg_url, token_file) as b, \
            nginx_in_front(tmp_path / "nginx", (a["port"], b["port"])) as front:
        front["token"] = a["token"]
        for seed in (1, 2):
            data = pickle.dumps(LogisticRegression(C=seed, max_iter=500).fit(X, y))
            assert upload(front, model, data)[0] == 201
        yield a, b, front


def test_nginx_in_front_of_two_servers_never_serves_a_stale_alias_after_a_promotion(
        tmp_path: Path, pg_url: str) -> None:
    """Load through nginx (deploy/nginx.conf) to two servers started as the systemd unit starts
    them, while aliases move: every answer names the old or the new version, and every request
    sent after the move returned names the new one."""
    import http.client
    import time

    with behind_nginx(tmp_path, pg_url, "lb") as (a, b, front):
        assert call(front, "POST", "/models/lb/versions/1/promote")[0] == 200

        answers: list[tuple[float, int, int]] = []  # (sent at, status, version)
        stop = threading.Event()
        body = json.dumps(SETOSA).encode()
        host, port = front["base"].removeprefix("http://").split(":")

        def load() -> None:
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            while not stop.is_set():
                sent = time.monotonic()
                conn.request("POST", "/models/lb/production/predict", body=body,
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                raw = response.read()
                answers.append((sent, response.status, json.loads(raw).get("version", -1)))
            conn.close()

        threads = [threading.Thread(target=load) for _ in range(6)]
        for thread in threads:
            thread.start()
        moves: list[tuple[float, int]] = []
        try:
            for target in (2, 1, 2, 1, 2):
                time.sleep(0.4)
                status, _ = call(front, "POST", f"/models/lb/versions/{target}/promote")
                assert status == 200
                moves.append((time.monotonic(), target))
            time.sleep(0.4)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert len(answers) > 200
        assert {status for _, status, _ in answers} == {200}
        assert {version for _, _, version in answers} == {1, 2}
        for sent, _, version in answers:
            returned = [target for when, target in moves if when <= sent]
            if returned:  # sent after a move had returned: that move's version, or a later one's
                later = {target for when, target in moves if when > sent}
                assert version in {returned[-1], *later}, (sent, version, moves)
        # Both servers answered through nginx.
        for server in (a, b):
            status, text = call(server, "GET", "/metrics")
            assert status == 200 and b'model="lb"' in (text if isinstance(text, bytes) else b"")


def test_a_weighted_alias_splits_10000_requests_through_nginx_by_weight(tmp_path: Path, pg_url: str) -> None:
    """production 90/10 between two versions, two servers on one PostgreSQL behind nginx:
    10,000 requests with distinct X-Request-Key values split within 2 points of the weights, and
    each key gets the same version from either server."""
    import http.client
    from collections import Counter

    with behind_nginx(tmp_path, pg_url, "canary") as (a, b, front):
        status, moved = call(front, "PUT", "/models/canary/aliases/production",
                             json.dumps({"weights": {"1": 90, "2": 10}}).encode())
        assert status == 200 and moved["weights"] == {"1": 90, "2": 10}
        body = json.dumps(SETOSA).encode()

        def versions(base: str, keys: range) -> dict[int, int]:
            host, port = base.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            chosen = {}
            for i in keys:
                conn.request("POST", "/models/canary/production/predict", body=body,
                             headers={"Content-Type": "application/json", "X-Request-Key": f"customer-{i}"})
                response = conn.getresponse()
                answer = json.loads(response.read())
                assert response.status == 200 and response.getheader("X-Model-Version") == str(answer["version"])
                chosen[i] = answer["version"]
            conn.close()
            return chosen

        results: list[dict[int, int]] = []
        threads = [threading.Thread(target=lambda part=part: results.append(
            versions(front["base"], range(part, 10_000, 4)))) for part in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        through_nginx = {key: version for part in results for key, version in part.items()}
        assert len(through_nginx) == 10_000
        split = Counter(through_nginx.values())
        assert abs(split[1] / 10_000 - 0.9) <= 0.02 and abs(split[2] / 10_000 - 0.1) <= 0.02, split
        sample = range(0, 10_000, 97)
        assert versions(a["base"], sample) == versions(b["base"], sample) == {k: through_nginx[k] for k in sample}
