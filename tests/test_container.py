"""The container image (deploy/Dockerfile), built and run for real.

No image registry is reachable here, so the test makes its base image itself: a minimal Debian
bookworm with python3, python3-venv and ca-certificates (debootstrap), imported into a Docker
daemon the test starts and stops (Debian's docker.io; .ci/run installs it and debootstrap). The
image is built with ``--build-arg BASE=`` that base and the host's CA bundle as a BuildKit secret
(pip inside the build goes through this network's TLS), then run against the machine's real
PostgreSQL: healthy by its own health check, the tutorial's curl answered, a non-root user, the
registry in PostgreSQL, and a clean stop on SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serve_helpers import free_port, serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CLIENT = "/usr/bin/docker"  # Debian's client, which speaks to Debian's daemon (BuildKit built in)
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
BASE = "modelyard-test-base:bookworm"
IMAGE = "modelyard:test"


def _require(*binaries: str) -> None:
    missing = [b for b in binaries if not (shutil.which(b) or Path(b).exists())]
    if missing:
        message = f"{', '.join(missing)} not installed (Debian's docker.io and debootstrap; .ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


class Docker:
    def __init__(self, socket: str) -> None:
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{socket}", "DOCKER_BUILDKIT": "1"}

    def __call__(self, *args: str, timeout: float = 120, check: bool = True,
                 stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([CLIENT, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                                stdin=stdin)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    """A Docker daemon of this test's own, its state in a temporary directory, stopped after."""
    _require("dockerd", CLIENT, "debootstrap")
    # Short paths: containerd's socket lives under the exec root, and a socket path has 108 bytes.
    state = Path(tempfile.mkdtemp(prefix="my-dk-", dir="/tmp"))
    socket = str(state / "docker.sock")
    client = Docker(socket)
    argv = ["dockerd", "--data-root", str(state / "data"), "--exec-root", str(state / "x"), "--pidfile",
            str(state / "docker.pid"), "-H", f"unix://{socket}", "--bridge", "none", "--iptables=false"]
    try:
        with serving(argv, dict(os.environ), state / "dockerd.log", timeout=60,
                     ready=lambda _: client("info", check=False).returncode == 0):
            yield client
    finally:
        # What the daemon left mounted (its network namespace, overlays), deepest first.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(state))), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def image(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """The base made with debootstrap and imported, then the image built on it; their timings."""
    rootfs = tmp_path_factory.mktemp("rootfs")
    started = time.monotonic()
    made = subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                           "bookworm", str(rootfs), "http://deb.debian.org/debian"],
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    docker("import", "-", BASE, stdin=tar.stdout, timeout=300)
    assert tar.wait() == 0
    base_seconds = time.monotonic() - started
    shutil.rmtree(rootfs, ignore_errors=True)
    started = time.monotonic()
    docker("build", "--network", "host", "--progress", "plain", "-f", "deploy/Dockerfile",
           "--build-arg", f"BASE={BASE}", "--secret", f"id=ca,src={CA_BUNDLE}", "-t", IMAGE, str(ROOT), timeout=900)
    return {"base_seconds": base_seconds, "build_seconds": time.monotonic() - started}


def _health(docker: Docker, container: str) -> str:
    state = json.loads(docker("inspect", "--format", "{{json .State}}", container).stdout)
    return state.get("Health", {}).get("Status", "none")


def test_the_image_serves_the_tutorial_against_postgresql_as_a_non_root_user(
        docker: Docker, image: dict[str, float], pg_url: str) -> None:
    port = free_port()
    container = docker(
        "run", "-d", "--network", "host",
        "-e", f"MODELYARD_SERVER_PORT={port}",
        "-e", f"MODELYARD_DATABASE_URL={pg_url.replace('postgresql+psycopg://', 'postgresql://', 1)}",
        "-e", "MODELYARD_ARTIFACTS_STORE=database",
        IMAGE).stdout.strip()
    try:
        deadline = time.monotonic() + 120
        while (status := _health(docker, container)) != "healthy":
            assert status in ("starting", "none"), docker("logs", container, check=False).stderr[-3000:]
            assert time.monotonic() < deadline, docker("logs", container, check=False).stderr[-3000:]
            time.sleep(1)
        body = json.dumps({"sepal.lenght": 5.1, "sepal.width": 3.5, "petal.lenght": 1.4, "petal.width": 0.2})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body.encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read()) == {"model": "iris", "version": 1, "predictions": [0],
                                                   "labels": ["setosa"], "target_value": 0}
        assert docker("exec", container, "id", "-u").stdout.strip() != "0"
        assert docker("exec", container, "id", "-un").stdout.strip() == "modelyard"
        # The registry is the PostgreSQL one: the seeded iris is a row there, and its artifact too.
        import psycopg

        with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
            assert conn.execute("SELECT name FROM models").fetchall() == [("iris",)]
            assert conn.execute("SELECT count(*) FROM artifact_blobs").fetchone() == (1,)
        docker("stop", "--time", "30", container, timeout=60)
        assert docker("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip() == "0"
        logs = docker("logs", container).stderr
        assert "serving on http://0.0.0.0:" in logs
        assert "Traceback" not in logs
    finally:
        docker("rm", "-f", container, check=False)
    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    base = int(docker("image", "inspect", "--format", "{{.Size}}", BASE).stdout)
    print(f"\nbase image {base / 1e6:.0f} MB made in {image['base_seconds']:.0f} s; "
          f"modelyard image {size / 1e6:.0f} MB ({(size - base) / 1e6:.0f} MB over the base) "
          f"built in {image['build_seconds']:.0f} s")


def test_the_image_keeps_neither_the_source_tree_nor_the_ca_bundle(docker: Docker, image: dict[str, float]) -> None:
    listing = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", IMAGE, "-c",
                     "echo files: $(find /src /run/secrets -mindepth 1 2>/dev/null | wc -l); "
                     "python3 -c 'import modelyard, sys; print(modelyard.__file__, sys.prefix)'").stdout
    assert "files: 0" in listing  # the mounts of the install step leave empty directories, nothing in them
    assert "/opt/modelyard/lib/python3.11/site-packages/modelyard/__init__.py /opt/modelyard" in listing
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE).stdout
    assert "BEGIN CERTIFICATE" not in history
