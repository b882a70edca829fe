"""Run the real `modelyard serve` command for a test: start it, wait for its workers, stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(tmp_path: Path, *, workers: int = 2, database_url: str | None = None,
                   **env_extra: str) -> Iterator[dict[str, Any]]:
    """``{"base", "token", "master", "dir", "log"}`` of a server on a fresh registry in ``tmp_path``."""
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(MODELYARD_DATABASE_URL=database_url or f"sqlite:///{tmp_path / 'registry.db'}",
               MODELYARD_ARTIFACTS_ROOT=str(tmp_path / "artifacts"),
               MODELYARD_AUTH_ADMIN_TOKEN_FILE=str(tmp_path / "admin.token"),
               MODELYARD_SERVER_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), **env_extra)
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "modelyard.cli", "serve", "--workers", str(workers)], env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while len(workers_of(process.pid)) < workers or not answers(base):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start:\n{(tmp_path / 'server.log').read_text()}")
            time.sleep(0.2)
        token = (tmp_path / "admin.token").read_text().strip()
        yield {"base": base, "token": token, "master": process.pid, "dir": metrics_dir,
               "log": tmp_path / "server.log"}
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


def workers_of(master: int) -> list[int]:
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
