"""The wheel is the product: built from the checkout, installed into a fresh venv, then
`modelyard serve` in an empty directory migrates, seeds and answers the tutorial's curl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.serve_helpers import answers, free_port, serving

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
                   check=True, timeout=300, capture_output=True)
    (built,) = out.glob("modelyard-*.whl")
    return built


def test_the_wheel_holds_one_modelyard_package_with_its_defaults_and_migrations(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"modelyard"}  # no generic top-level `registry` or `serving`
    assert "modelyard/config.toml" in names
    assert "modelyard/migrations/env.py" in names
    assert "modelyard/migrations/script.py.mako" in names
    shipped = {Path(name).name for name in names if name.startswith("modelyard/migrations/versions/")}
    assert shipped == {path.name for path in (ROOT / "migrations" / "versions").glob("*.py")}
    assert "modelyard/registry/service.py" in names and "modelyard/serving/service.py" in names
    assert {"modelyard/ui/templates/base.html", "modelyard/ui/static/ui.js", "modelyard/ui/static/ui.css"} <= set(names)


def test_a_fresh_venv_serves_the_tutorial_from_an_empty_directory(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    python = str(venv / "bin" / "python")
    where = subprocess.run([python, "-c", "import modelyard; print(modelyard.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(venv))
    for generic in ("registry", "serving"):
        assert subprocess.run([python, "-c", f"import {generic}"], cwd=tmp_path, capture_output=True).returncode != 0

    work = tmp_path / "empty"
    work.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELYARD_", "PROMETHEUS_", "PYTHON"))}
    base = f"http://127.0.0.1:{port}"
    argv = [str(venv / "bin" / "modelyard"), "serve", "--port", str(port), "--workers", "1"]
    with serving(argv, env, tmp_path / "serve.log", ready=lambda _process: answers(base), timeout=120, cwd=work):
        body = json.dumps({"sepal.lenght": 5.1, "sepal.width": 3.5, "petal.lenght": 1.4, "petal.width": 0.2})
        request = urllib.request.Request(f"{base}/predict", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
        assert answer["model"] == "iris" and answer["labels"] == ["setosa"] and answer["target_value"] == 0
        with urllib.request.urlopen(f"{base}/ui/models/iris", timeout=10) as page:  # templates shipped too
            assert b"production" in page.read()
    # The data landed in the working directory, not inside site-packages.
    assert (work / "registry.db").is_file() and (work / "admin.token").is_file()
    assert any((work / "artifacts").iterdir())
