"""Library drift: a model pickled under another scikit-learn is recorded as such, its load
warnings are kept, and `modelyard check` / `POST /admin/check` report every stored version as
ok, warning or broken."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sklearn
from flask.testing import FlaskClient
from sqlalchemy import update

from modelyard.registry.models import ModelVersion
from modelyard.web.context import Runtime
from tests.factories import tamper

OLD_PICKLE = Path(__file__).resolve().parent.parent / "fixtures" / "logreg-sklearn-1.5.2.pkl"
SETOSA = [[5.1, 3.5, 1.4, 0.2]]


def upload_old(client: FlaskClient) -> Any:
    response = client.post("/models/old/versions", data={"file": (io.BytesIO(OLD_PICKLE.read_bytes()), "old.pkl")},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.json
    return response.json


def test_the_version_a_model_was_pickled_with_is_recorded_beside_the_servers(client: FlaskClient) -> None:
    detail = upload_old(client)
    assert detail["library_versions"]["sklearn_pickled"] == "1.5.2"
    assert detail["library_versions"]["sklearn"] == sklearn.__version__
    assert any(w.startswith("InconsistentVersionWarning") and "1.5.2" in w for w in detail["load_warnings"])


def test_a_model_pickled_by_this_scikit_learn_has_no_warnings(client: FlaskClient) -> None:
    detail = client.get("/models/iris/versions/1").json
    assert detail["library_versions"]["sklearn_pickled"] == sklearn.__version__
    assert detail["load_warnings"] == []


def test_warnings_of_a_serving_load_show_on_the_version(client: FlaskClient, runtime: Runtime) -> None:
    """A version stored without warnings (as when it was uploaded under its own scikit-learn)
    shows the warnings this process's load raised."""
    upload_old(client)
    with runtime.sessions() as session:
        session.execute(update(ModelVersion).where(ModelVersion.sha256 == _sha(client)).values(load_warnings=[]))
        session.commit()
    assert client.get("/models/old/versions/1").json["load_warnings"] == []
    assert client.post("/models/old/1/predict", json={"inputs": SETOSA}).status_code == 200
    warnings = client.get("/models/old/versions/1").json["load_warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("InconsistentVersionWarning")


def _sha(client: FlaskClient) -> str:
    return client.get("/models/old/versions/1").json["sha256"]


def test_admin_check_reports_ok_warning_and_broken(client: FlaskClient, runtime: Runtime) -> None:
    upload_old(client)
    broken = client.post("/models/gone/versions", data={"file": (io.BytesIO(OLD_PICKLE.read_bytes() + b""), "m.pkl")},
                         content_type="multipart/form-data").json
    # The same bytes share one blob; break a version of its own by pointing it at a missing one.
    with runtime.sessions() as session:
        session.execute(update(ModelVersion).where(ModelVersion.sha256 == broken["sha256"],
                                                   ModelVersion.version == 1,
                                                   ModelVersion.model.has(name="gone")).values(sha256="0" * 64))
        session.commit()
    response = client.post("/admin/check")
    assert response.status_code == 200
    report = response.json
    by_model = {r["model"]: r for r in report["results"]}
    assert by_model["iris"]["status"] == "ok"
    assert by_model["old"]["status"] == "warning"
    assert by_model["old"]["sklearn_pickled"] == "1.5.2"
    assert "InconsistentVersionWarning" in by_model["old"]["reason"]
    assert by_model["gone"]["status"] == "broken"
    assert "missing from the store" in by_model["gone"]["reason"]
    assert report["counts"] == {"ok": 1, "warning": 1, "broken": 1}
    assert report["libraries"]["sklearn"] == sklearn.__version__


def test_check_reports_a_version_its_example_no_longer_fits_as_broken(client: FlaskClient, runtime: Runtime) -> None:
    upload_old(client)
    with runtime.sessions() as session:
        session.execute(update(ModelVersion).values(example=[[1.0, 2.0]]).where(ModelVersion.sha256 == _sha(client)))
        session.commit()
    results = {r["model"]: r for r in client.post("/admin/check").json["results"]}
    assert results["old"]["status"] == "broken"
    assert "row of 4 values" in results["old"]["reason"]


@pytest.mark.parametrize("role, status", [("reader", 403), ("uploader", 403), ("promoter", 403)])
def test_check_needs_admin(client: FlaskClient, anon: FlaskClient, role: str, status: int) -> None:
    token = client.post("/tokens", json={"name": f"t-{role}", "role": role}).json["token"]
    assert anon.post("/admin/check", headers={"Authorization": f"Bearer {token}"}).status_code == status
    assert anon.post("/admin/check").status_code == 401


def _cli(config: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "MODELYARD_DATABASE_URL": config["database"]["url"],
        "MODELYARD_ARTIFACTS_STORE": config["artifacts"].get("store", "local"),
        "MODELYARD_ARTIFACTS_ROOT": config["artifacts"]["root"],
        "MODELYARD_AUTH_ADMIN_TOKEN_FILE": config["auth"]["admin_token_file"],
    }
    return subprocess.run([str(Path(sys.executable).parent / "modelyard"), "check", *args], env=env,
                          capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_cli_check_prints_each_version_and_exits_0_without_broken_ones(config: dict[str, Any], tmp_path: Path) -> None:
    from modelyard.app import create_app
    from modelyard.web.context import EXTENSION
    from tests.conftest import admin_client

    app = create_app(config)
    upload_old(admin_client(app))
    app.extensions[EXTENSION].engine.dispose()
    done = _cli(config)
    assert done.returncode == 0, done.stderr
    assert "iris v1\tok" in done.stdout
    assert "old v1\twarning\tInconsistentVersionWarning" in done.stdout
    assert "1 ok, 1 warning, 0 broken" in done.stdout
    as_json = _cli(config, "--json")
    assert json.loads(as_json.stdout)["counts"] == {"ok": 1, "warning": 1, "broken": 0}


def test_cli_check_exits_1_when_a_version_is_broken(config: dict[str, Any], tmp_path: Path) -> None:
    from modelyard.app import create_app
    from modelyard.web.context import EXTENSION

    app = create_app(config)
    rt = app.extensions[EXTENSION]
    sha = json.loads(json.dumps(app.test_client().get("/models/iris/versions/1").json))["sha256"]
    tamper(rt.store, sha, b"tampered")
    rt.engine.dispose()
    done = _cli(config)
    assert done.returncode == 1
    assert "iris v1\tbroken\t" in done.stdout
    assert "failed its checksum" in done.stdout
