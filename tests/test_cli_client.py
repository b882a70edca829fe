"""The `modelyard` commands that reach a server, through the real entry point against a real
`modelyard serve`: tables by default, --json parsed back, exit 1 with the server's message for a
refused request and 2 for bad usage, and a 64 MB upload's progress bar."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.client import Client
from tests.factories import fitted_logreg
from tests.serve_helpers import running_server

pytestmark = pytest.mark.slow

MODELYARD = str(Path(sys.executable).parent / "modelyard")
VIRGINICA = {"sepal.length": 5.9, "sepal.width": 3.0, "petal.length": 5.1, "petal.width": 1.8}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with running_server(tmp_path_factory.mktemp("cli"), workers=1, MODELYARD_OBSERVE_SAMPLE_RATE="1.0") as running:
        yield running


def _run(server: dict[str, Any], *args: str, token: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    environ["MODELYARD_URL"] = server["base"]  # the client's variables, as a shell would export them
    if token:
        environ["MODELYARD_TOKEN"] = server["token"]
    environ.update(env)
    return subprocess.run([MODELYARD, *args], capture_output=True, text=True, timeout=300, env=environ,
                          stdin=subprocess.DEVNULL)


def test_upload_list_show_promote_predict_download_events(server: dict[str, Any], tmp_path: Path) -> None:
    model_file = tmp_path / "flowers.pkl"
    model_file.write_bytes(pickle.dumps(fitted_logreg()))
    uploaded = _run(server, "upload", str(model_file), "--name", "cli-flowers", "--metrics", '{"accuracy": 0.97}',
                    "--labels", '["setosa", "versicolor", "virginica"]', "--features", json.dumps(list(VIRGINICA)),
                    "--example", json.dumps([VIRGINICA]))
    assert uploaded.returncode == 0, uploaded.stderr
    assert uploaded.stdout.startswith("uploaded cli-flowers version 1: sklearn.linear_model._logistic.Logistic")
    assert uploaded.stderr == ""  # no progress bar off a terminal

    table = _run(server, "models", "list")
    assert table.returncode == 0 and "cli-flowers" in table.stdout and "iris" in table.stdout
    listed = json.loads(_run(server, "models", "list", "--json").stdout)
    with Client(server["base"], token=server["token"]) as client:
        assert listed == client.list_models()
    shown = json.loads(_run(server, "models", "show", "cli-flowers", "--json").stdout)
    assert shown["latest_version"] == 1 and shown["aliases"] == {}

    promoted = _run(server, "promote", "cli-flowers", "1")
    assert promoted.returncode == 0 and promoted.stdout.strip() == "cli-flowers: production (new) -> 1"
    versions = json.loads(_run(server, "versions", "list", "cli-flowers", "--json").stdout)
    assert [(v["version"], v["aliases"], v["metadata"]["metrics"]) for v in versions] == [
        (1, ["production"], {"accuracy": 0.97})]

    predicted = _run(server, "predict", "cli-flowers", "--json", json.dumps([VIRGINICA]))
    assert predicted.returncode == 0, predicted.stderr
    assert "virginica" in predicted.stdout and "version 1" in predicted.stdout
    answer = json.loads(_run(server, "predict", "cli-flowers", "1", "--json", json.dumps([VIRGINICA]), "--proba",
                             "--json-output").stdout)
    assert answer["predictions"] == [2] and answer["class_labels"] == ["setosa", "versicolor", "virginica"]
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("petal.width,sepal.length,petal.length,sepal.width\n1.8,5.9,5.1,3.0\n0.2,5.1,1.4,3.5\n")
    from_csv = _run(server, "predict", "cli-flowers", "production", "--csv", str(csv_file))
    assert from_csv.returncode == 0, from_csv.stderr
    assert from_csv.stdout.index("virginica") < from_csv.stdout.index("setosa")

    saved = _run(server, "download", "cli-flowers", "1", "-o", str(tmp_path / "back.pkl"))
    assert saved.returncode == 0, saved.stderr
    assert (tmp_path / "back.pkl").read_bytes() == model_file.read_bytes()
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() in saved.stdout

    history = json.loads(_run(server, "events", "cli-flowers", "--json").stdout)
    assert [e["action"] for e in history] == ["alias.set", "version.created", "model.created"]
    rolled = _run(server, "rollback", "cli-flowers")
    assert rolled.returncode == 1
    assert rolled.stderr.startswith("modelyard: [409]") and "production" in rolled.stderr


def test_weights_and_history(server: dict[str, Any], tmp_path: Path) -> None:
    model_file = tmp_path / "m.pkl"
    model_file.write_bytes(pickle.dumps(fitted_logreg()))
    for _ in range(2):
        assert _run(server, "upload", str(model_file), "--name", "cli-canary").returncode == 0
    assert _run(server, "promote", "cli-canary", "1").returncode == 0
    split = _run(server, "weights", "cli-canary", "1=90", "2=10")
    assert split.returncode == 0, split.stderr
    assert split.stdout.strip() == "cli-canary: production 1 -> 1:90 2:10"
    assert json.loads(_run(server, "weights", "cli-canary", "1=50", "2=50", "--json").stdout)["weights"] == {
        "1": 50, "2": 50}
    bad = _run(server, "weights", "cli-canary", "1=ninety")
    assert bad.returncode == 2 and "VERSION=WEIGHT" in bad.stderr
    table = _run(server, "history", "cli-canary")
    assert table.returncode == 0 and "v1:50 v2:50" in table.stdout and "v1:90 v2:10" in table.stdout
    states = json.loads(_run(server, "history", "cli-canary", "--json").stdout)
    assert [s["action"] for s in states] == ["alias.moved", "alias.moved", "alias.set"]
    at = _run(server, "history", "cli-canary", "--at", states[-1]["since"])
    assert at.returncode == 0 and at.stdout.strip().endswith(": v1")
    shadowed = _run(server, "shadow", "cli-canary", "--set", "2", "--fraction", "1")
    assert shadowed.returncode == 0 and shadowed.stdout.strip() == (
        "cli-canary: production shadowed by version 2 for 1 of its requests")
    assert _run(server, "shadow", "cli-canary", "--set", "2").returncode == 2
    assert _run(server, "predict", "cli-canary", "--json", json.dumps([list(VIRGINICA.values())])).returncode == 0
    report = json.loads(_run(server, "shadow", "cli-canary", "--json").stdout)
    assert report["version"] == 2 and report["requests"] >= 1
    assert _run(server, "shadow", "cli-canary").returncode == 0  # the report as a table
    assert _run(server, "shadow", "cli-canary", "--remove").returncode == 0
    assert _run(server, "shadow", "cli-canary").returncode == 1
    assert _run(server, "guard", "cli-canary").returncode == 1  # no guard yet: the API's 404
    assert _run(server, "promote", "cli-canary", "1").returncode == 0
    guarded = _run(server, "weights", "cli-canary", "1=90", "2=10", "--guard", "error_rate:0.05", "--window", "60",
                   "--min-samples", "10", "--json")
    assert guarded.returncode == 0, guarded.stderr
    assert json.loads(guarded.stdout)["guard"] == {"metric": "error_rate", "max": 0.05, "window_seconds": 60,
                                                   "min_samples": 10}
    status = _run(server, "guard", "cli-canary")
    assert status.returncode == 0 and "error_rate over 60 s, max 0.05, at least 10 samples; returns to v1: " \
        "inconclusive" in status.stdout, status.stdout
    assert _run(server, "weights", "cli-canary", "1=1", "--guard", "error_rate").returncode == 2


@pytest.mark.parametrize(("args", "status", "words"), [
    (["models", "show", "nope"], 1, "modelyard: [404] model 'nope' not found"),
    (["predict", "iris"], 2, "exactly one of --json BODY or --csv FILE"),
    (["upload", "/nonexistent.pkl", "--name", "x"], 2, "does not exist"),
    (["promote", "iris"], 2, "Missing argument"),
    (["models", "list", "--tag", "novalue"], 1, "key:value"),
])
def test_refused_requests_exit_1_and_bad_usage_2(server: dict[str, Any], args: list[str], status: int,
                                                 words: str) -> None:
    result = _run(server, *args)
    assert result.returncode == status, (result.stdout, result.stderr)
    assert words in result.stderr


def test_bad_json_options_and_bad_tokens(server: dict[str, Any], tmp_path: Path) -> None:
    model_file = tmp_path / "m.pkl"
    model_file.write_bytes(pickle.dumps(fitted_logreg()))
    bad = _run(server, "upload", str(model_file), "--name", "x", "--metrics", "{accuracy")
    assert bad.returncode == 2 and "--metrics" in bad.stderr and "not JSON" in bad.stderr
    denied = _run(server, "upload", str(model_file), "--name", "x", token=False)
    assert denied.returncode == 1 and "[401]" in denied.stderr
    assert "(no token was sent; give one with --token or MODELYARD_TOKEN)" in denied.stderr
    refused = _run(server, "upload", str(model_file), "--name", "x", MODELYARD_TOKEN="myd_nope")
    assert refused.returncode == 1 and "(the token sent was refused; give one with --token or MODELYARD_TOKEN)" \
        in refused.stderr
    unreachable = _run(server, "models", "list", MODELYARD_URL="http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "could not reach the modelyard server" in unreachable.stderr
    assert "(the server is set by --url or MODELYARD_URL; this command used http://127.0.0.1:9)" in unreachable.stderr


def test_a_64_mb_upload_shows_its_progress(server: dict[str, Any], tmp_path: Path) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((1_600_000, 4))
    model = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(X, (X[:, 0] > 0).astype(np.int64))
    big = tmp_path / "knn.pkl"
    big.write_bytes(pickle.dumps(model, protocol=5))
    size = big.stat().st_size
    assert size > 60_000_000
    result = _run(server, "upload", str(big), "--name", "knn", "--progress", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["size_bytes"] == size
    assert "uploading knn.pkl" in result.stderr
    assert f"{size / 1e6:.1f}/{size / 1e6:.1f} MB" in result.stderr  # the bar's last state: every byte sent


def test_the_readme_notebook_example_runs_as_written(server: dict[str, Any], tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [code] = [block.split("```", 1)[0] for block in readme.split("```python\n")[1:] if "notebook-iris" in block]
    (tmp_path / "admin.token").write_text(server["token"])
    code = code.replace("127.0.0.1:8080", server["base"].removeprefix("http://"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1 skops ['sepal length (cm)', 'sepal width (cm)']"
    assert lines[1] == "[2, 2] ['virginica', 'virginica']"
    assert lines[2] == "{'alias': 'production', 'version': 1, 'previous_version': None}"
    assert lines[3] == "['notebook-iris']"


def test_a_gated_promotion_through_the_cli(tmp_path: Path) -> None:
    """[aliases] replay and second_approver set by environment: `promote` says the move waits,
    `approve` lists it, the asker's own approval is refused and another promoter's makes it."""
    with running_server(tmp_path, workers=1, MODELYARD_ALIASES_REPLAY="production",
                        MODELYARD_ALIASES_SECOND_APPROVER="production") as gated:
        import httpx

        tokens = {who: httpx.post(f"{gated['base']}/tokens", json={"name": who, "role": "promoter"},
                                  headers={"Authorization": f"Bearer {gated['token']}"}).json()["token"]
                  for who in ("alice", "bob")}
        model_file = tmp_path / "m.pkl"
        model_file.write_bytes(pickle.dumps(fitted_logreg()))
        uploaded = _run(gated, "upload", str(model_file), "--name", "cli-gated", "--features",
                        json.dumps(list(VIRGINICA)), "--example", json.dumps([VIRGINICA]))
        assert uploaded.returncode == 0, uploaded.stderr
        asked = _run(gated, "promote", "cli-gated", "1", MODELYARD_TOKEN=tokens["alice"])
        assert asked.returncode == 0, asked.stderr
        assert "production waits for a second approver" in asked.stdout
        waiting = json.loads(_run(gated, "approve", "cli-gated", "--json").stdout)
        assert [(p["version"], p["requested_by"]) for p in waiting] == [(1, "alice")]
        own = _run(gated, "approve", "cli-gated", str(waiting[0]["id"]), MODELYARD_TOKEN=tokens["alice"])
        assert own.returncode == 1 and "[403]" in own.stderr
        done = _run(gated, "approve", "cli-gated", str(waiting[0]["id"]), MODELYARD_TOKEN=tokens["bob"])
        assert done.returncode == 0 and done.stdout.strip() == "cli-gated: production (new) -> 1", done.stderr


def test_webhooks_through_the_cli(server: dict[str, Any]) -> None:
    added = _run(server, "webhooks", "add", "https://93.184.215.14/hook", "alias.removed")
    assert added.returncode == 0, added.stderr
    lines = added.stdout.strip().splitlines()
    assert lines[0].endswith(": https://93.184.215.14/hook <- alias.removed")
    assert lines[1].startswith("secret (shown this once): whsec_")
    hook_id = lines[0].split()[1].rstrip(":")
    listed = json.loads(_run(server, "webhooks", "list", "--json").stdout)
    assert [h["url"] for h in listed] == ["https://93.184.215.14/hook"] and "secret" not in listed[0]
    assert json.loads(_run(server, "webhooks", "deliveries", hook_id, "--json").stdout) == []
    refused = _run(server, "webhooks", "add", "http://127.0.0.1:9/hook", "*")
    assert refused.returncode == 1 and "[422]" in refused.stderr and "allow_private" in refused.stderr
    assert _run(server, "webhooks", "remove", hook_id).returncode == 0
    assert _run(server, "webhooks", "list").returncode == 0


def test_an_upload_with_a_reference_file(server: dict[str, Any], tmp_path: Path) -> None:
    import pandas as pd

    from tests.factories import X

    model_file = tmp_path / "m.pkl"
    model_file.write_bytes(pickle.dumps(fitted_logreg()))
    (tmp_path / "train.csv").write_text(pd.DataFrame(X, columns=list(VIRGINICA)).to_csv(index=False))
    uploaded = _run(server, "upload", str(model_file), "--name", "cli-profiled", "--features",
                    json.dumps(list(VIRGINICA)), "--reference", str(tmp_path / "train.csv"), "--json")
    assert uploaded.returncode == 0, uploaded.stderr
    found = json.loads(uploaded.stdout)["profile"]
    assert found["rows"] == len(X) and list(found["features"]) == list(VIRGINICA)
    assert found["features"]["petal.length"]["mean"] == pytest.approx(float(X[:, 2].mean()))

    assert _run(server, "predict", "cli-profiled", "1", "--json", json.dumps(X.tolist())).returncode == 0
    report = json.loads(_run(server, "drift", "cli-profiled", "1", "--json").stdout)
    assert [f["samples"] for f in report["features"]] == [len(X)] * 4 and report["verdict"] == "none"
    shown = _run(server, "drift", "cli-profiled", "1", "--window", "24h")
    assert shown.returncode == 0 and "cli-profiled v1, 24h from" in shown.stdout and "petal.length" in shown.stdout
    logged = json.loads(_run(server, "predictions", "cli-profiled", "1", "--json").stdout)
    assert len(logged) == 1 and logged[0]["n_rows"] == len(X) and len(logged[0]["rows"]) == 100
    refused = _run(server, "predictions", "cli-profiled", "1", token=False)
    assert refused.returncode == 1 and "prediction log needs a token" in refused.stderr
