"""The `modelyard` commands not covered elsewhere: migrate and debug (serve, token, check and
config have tests of their own)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect

MODELYARD = str(Path(sys.executable).parent / "modelyard")


def _env(tmp_path: Path) -> dict[str, str]:
    """SQLite: these check the commands themselves; `check`'s on PostgreSQL is in
    tests/registry/test_check.py, the server's in tests/test_serve_cluster.py."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(MODELYARD_DATABASE_URL=f"sqlite:///{tmp_path / 'registry.db'}",
               MODELYARD_ARTIFACTS_ROOT=str(tmp_path / "artifacts"),
               MODELYARD_CACHE_MAPPED_ROOT=str(tmp_path / "mapped"),
               MODELYARD_AUTH_ADMIN_TOKEN_FILE=str(tmp_path / "admin.token"))
    return env


def test_migrate_brings_an_empty_database_to_head(tmp_path: Path) -> None:
    result = subprocess.run([MODELYARD, "migrate"], env=_env(tmp_path), capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "database schema is at head"
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        assert {"models", "model_versions", "aliases", "events", "tokens", "alembic_version"} <= set(
            inspect(engine).get_table_names())
        with engine.connect() as conn:
            heads = [row[0] for row in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
    finally:
        engine.dispose()
    newest = sorted(p.name for p in (Path(__file__).parent.parent / "migrations" / "versions").glob("0*.py"))[-1]
    assert heads == [newest.split("_")[0]]
    again = subprocess.run([MODELYARD, "migrate"], env=_env(tmp_path), capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
    assert again.returncode == 0  # a second run is a no-op


def test_debug_serves_the_app_on_the_given_port(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([MODELYARD, "debug", "--port", str(port)], env=_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline and answer is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    answer = json.loads(response.read())
            except OSError:
                time.sleep(0.2)
        assert answer is not None, "the debug server never answered"
        assert answer["status"] == "ok"
        body = json.dumps({"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["predictions"] == [0]
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_serve_takes_the_engine_from_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """`modelyard serve --engine gunicorn` reaches the server as the [server] engine override."""
    import modelyard.server
    from modelyard.cli import main

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(modelyard.server, "serve", lambda overrides: seen.append(overrides))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    assert main(["serve", "--engine", "gunicorn", "--port", "9123"]) == 0
    assert seen == [{"server": {"engine": "gunicorn", "port": 9123}}]
