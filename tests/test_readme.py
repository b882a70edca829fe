"""The README's shell blocks, run as a user's shell runs them: one bash session (errors stop it),
from the directory a `modelyard serve` was started in, with the checkout's `.venv` beside it and
nothing of it on PATH until the README's own `. .venv/bin/activate`. The only change made to the
text is the server's address, as the quick start tells a user with another port to do. (The
Python examples: tests/test_cli_client.py and tests/test_serve_v2.py.)"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serve_helpers import answers, free_port, serving

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parent.parent / "README.md"
# The blocks a newcomer runs after the quick start, each found by a line only it has, in README order.
BLOCKS = {
    "quick start": "-X POST http://127.0.0.1:8080/predict",
    "activate": ". .venv/bin/activate",
    "pages": "page_size=1",
    "upload": "/models/flowers/versions/1/promote",
    "canary": "/models/flowers/canary/predict",
    "guard": "/models/flowers/aliases/canary/guard",
    "cli": "modelyard upload model.pkl",
    "tokens": "modelyard token create",
}


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`modelyard serve` started in an empty directory, on its defaults but the port (the
    registry, artifacts and admin.token land there), with the checkout's venv as `.venv`."""
    here = tmp_path_factory.mktemp("readme")
    (here / ".venv").symlink_to(Path(sys.prefix))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env["MODELYARD_SERVER_PORT"] = str(port)
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "modelyard.cli", "serve", "--workers", "1"]
    with serving(argv, env, here / "server.log", ready=lambda _process: answers(base), timeout=60, cwd=here):
        yield {"dir": here, "address": f"127.0.0.1:{port}", "base": base}


def test_the_readme_blocks_run_as_written(served: dict[str, Any]) -> None:
    blocks = readme_blocks("sh")
    chosen = []
    for name, marker in BLOCKS.items():
        found = [block for block in blocks if marker in block]
        assert len(found) == 1, (name, len(found))
        chosen.append((blocks.index(found[0]), name, found[0]))
    assert [name for _, name, _ in sorted(chosen)] == list(BLOCKS)  # the order a reader meets them
    script = "".join(f"echo; echo '### {name}'\n{block.replace('127.0.0.1:8080', served['address'])}"
                     for _, name, block in sorted(chosen))
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELYARD_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=served["dir"], env=env,
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n---\n{result.stderr[-3000:]}"
    out = dict(re.findall(r"^### (.+?)\n(.*?)(?=^### |\Z)", result.stdout, flags=re.S | re.M))

    # The quick start answers what the README says it answers.
    said = re.search(r"^# (\{.*\})$", [b for b in blocks if BLOCKS["quick start"] in b][0], flags=re.M)
    assert said is not None and json.loads(out["quick start"]) == json.loads(said.group(1))
    assert "Usage: modelyard" in out["activate"]
    assert re.search(r"^x-pagination: \{.*\"total\": 1", out["pages"], flags=re.M | re.I)  # iris alone: no next page
    uploaded, promoted = [json.loads(line) for line in out["upload"].splitlines() if line.startswith("{")]
    assert uploaded["version"] == 1 and uploaded["labels"] == ["setosa", "versicolor", "virginica"]
    assert promoted == {"alias": "production", "version": 1, "previous_version": None}
    canary = [line for line in out["canary"].splitlines() if line.strip()]
    assert json.loads(canary[0]) == {"alias": "canary", "version": 1, "previous_version": None,
                                     "weights": {"1": 90, "2": 10}}
    assert re.fullmatch(r"x-model-version: [12]\r?", canary[-1], flags=re.I)
    guarded, status = [json.loads(line) for line in out["guard"].splitlines() if line.startswith("{")]
    assert guarded["weights"] == {"1": 90, "3": 10} and guarded["guard"]["metric"] == "error_rate"
    assert status["baseline"] == {"weights": {"1": 90, "2": 10}} and status["verdict"] == "inconclusive"
    cli = out["cli"]
    assert "uploaded flowers-cli version 1" in cli and "flowers-cli: production (new) -> 1" in cli
    assert "uploaded flowers-cli version 2" in cli and "flowers-cli: production 1 -> 1:90 2:10" in cli
    assert "v1:90 v2:10" in cli  # the history table
    assert "error_rate over 300 s, max 0.05, at least 200 samples; returns to v1: inconclusive" in cli
    assert cli.index("virginica") < cli.index("setosa")  # the --json row, then the CSV row
    model = (served["dir"] / "model.pkl").read_bytes()
    assert (served["dir"] / "flowers-v1.pkl").read_bytes() == model
    assert hashlib.sha256(model).hexdigest() in cli
    assert "alias.set" in cli.rsplit("saved flowers-v1.pkl", 1)[1]  # the events table, after the download
    token = json.loads(out["tokens"].splitlines()[0])
    assert token["name"] == "ci" and token["token"].startswith("myd_")
    assert "deploy" in out["tokens"] and "promoter" in out["tokens"]


def test_the_command_is_on_no_path_before_the_venv_is_activated(served: dict[str, Any]) -> None:
    """What a newcomer met: the README's `modelyard` lines fail without the activation it now says."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    bare = subprocess.run(["bash", "-c", "command -v modelyard"], cwd=served["dir"], env=env, capture_output=True)
    activated = subprocess.run(["bash", "-c", ". .venv/bin/activate && command -v modelyard"], cwd=served["dir"],
                               env=env, capture_output=True, text=True)
    assert bare.returncode == 1
    assert activated.returncode == 0 and activated.stdout.strip().endswith("/bin/modelyard")
