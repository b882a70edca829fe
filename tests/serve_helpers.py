"""Run the real `modelyard serve` command for a test: start it, wait for its workers, stop it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ENGINES = ("granian", "gunicorn")  # every serve test runs on both


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(tmp_path: Path, *, engine: str = "granian", workers: int = 2, database_url: str | None = None,
                   **env_extra: str) -> Iterator[dict[str, Any]]:
    """``{"base", "token", "master", "dir", "log", "process"}`` of a server on a fresh registry in
    ``tmp_path``, run by ``engine`` (granian or gunicorn). SQLite unless ``database_url`` says
    otherwise: these tests are about the server processes; servers on PostgreSQL are
    tests/test_serve_cluster.py's and tests/test_serve_promotion.py's."""
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(MODELYARD_DATABASE_URL=database_url or f"sqlite:///{tmp_path / 'registry.db'}",
               MODELYARD_ARTIFACTS_ROOT=str(tmp_path / "artifacts"),
               MODELYARD_CACHE_MAPPED_ROOT=str(tmp_path / "mapped"),
               MODELYARD_AUTH_ADMIN_TOKEN_FILE=str(tmp_path / "admin.token"),
               MODELYARD_SERVER_PORT=str(port), MODELYARD_SERVER_ENGINE=engine,
               PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    env.update(env_extra)
    argv = [sys.executable, "-m", "modelyard.cli", "serve", "--workers", str(workers)]
    base = f"http://127.0.0.1:{port}"

    def ready(process: subprocess.Popen[bytes]) -> bool:
        return len(workers_of(process.pid)) >= workers and answers(base)

    with serving(argv, env, tmp_path / "server.log", ready=ready, timeout=60) as process:
        token = Path(env["MODELYARD_AUTH_ADMIN_TOKEN_FILE"]).read_text().strip()
        yield {"base": base, "token": token, "master": process.pid, "dir": metrics_dir,
               "log": tmp_path / "server.log", "process": process}


@contextlib.contextmanager
def serving(argv: list[str], env: dict[str, str], log_path: Path, *, ready: Callable[[subprocess.Popen[bytes]], bool],
            timeout: float, cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server command, wait until ``ready``, stop it with SIGTERM (as a service
    manager would) when the block ends; its output goes to ``log_path``."""
    log = open(log_path, "w")
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not ready(process):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{' '.join(argv)} did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            process.kill()
            log.close()


def answers(base: str) -> bool:
    """The server at ``base`` answers its liveness check."""
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def upload(base: str, token: str, name: str, data: bytes, **fields: str) -> dict[str, Any]:
    """Upload ``data`` (and form ``fields``) as the next version of ``name`` to the server at
    ``base``, as curl -F would; the new version's detail."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
             for key, value in fields.items()]
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.pkl"\r\n\r\n'.encode()
    body = b"".join(parts) + head + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{base}/models/{name}/versions", data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        detail: dict[str, Any] = json.loads(response.read())
        return detail


def workers_of(master: int) -> list[int]:
    """The workers (granian's or gunicorn's): the master's children running the same command
    line, but for the trial sandbox's zygote."""
    return [pid for pid, name in children_of(master) if name != "trial-zygote"]


def children_of(parent: int) -> list[tuple[int, str]]:
    """``(pid, process name)`` of the children of ``parent`` running its command line."""
    own = Path(f"/proc/{parent}/cmdline").read_bytes()
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and (stat.parent / "cmdline").read_bytes() == own:
                children.append((int(stat.parent.name), (stat.parent / "comm").read_text().strip()))
        except (OSError, IndexError, ValueError):
            continue
    return children
