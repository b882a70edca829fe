"""Seldon MLServer 1.7 with its scikit-learn runtime, the reference the bench's batches are held
against (issue 27: 100-row batches >= 6x MLServer): the same Iris SVC, its default settings (one
inference worker process beside the HTTP server), requests in the Open Inference Protocol.

MLServer lives in a virtualenv of its own (its pins, FastAPI, uvicorn, gRPC..., must not move
modelyard's), made on first use under ``~/.cache/modelyard`` (``MODELYARD_BENCH_MLSERVER_VENV`` to
put it elsewhere) and reused after: ~1 minute and ~530 MB the first time. Its scikit-learn is
pinned to the bench's own, so the model file is read by the version that wrote it.

``uvloop<0.22``: MLServer 1.7.1's inference workers die at start with uvloop 0.22
("There is no current event loop in thread 'MainThread'", SeldonIO/MLServer#2286, unreleased fix).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import sklearn

VERSION = "1.7.1"
MODEL = "iris"
PATH = f"/v2/models/{MODEL}/infer"


def requirements() -> list[str]:
    return [f"mlserver=={VERSION}", f"mlserver-sklearn=={VERSION}", "uvloop<0.22",
            f"scikit-learn=={sklearn.__version__}"]


def venv() -> Path:
    """MLServer's virtualenv, made (or completed) if it is not there yet."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modelyard" / f"bench-mlserver-{VERSION}"
    root = Path(os.environ.get("MODELYARD_BENCH_MLSERVER_VENV", default))
    marker = root / ".installed"
    wanted = "\n".join(requirements())
    if marker.exists() and marker.read_text() == wanted:
        return root
    print(f"bench: installing MLServer {VERSION} into {root} (once)", flush=True)
    if not (root / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *requirements()], check=True)
    marker.write_text(wanted)
    return root


def serve_dir(work: Path, estimator: object, http_port: int, grpc_port: int, metrics_port: int) -> Path:
    """A model repository for ``mlserver start``: settings, the model's settings and its joblib file."""
    root = work / "mlserver"
    model = root / MODEL
    model.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, model / "model.joblib")
    (model / "model-settings.json").write_text(json.dumps({
        "name": MODEL, "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"}}))
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port}))
    return root


def argv(root: Path, venv_root: Path) -> list[str]:
    return [str(venv_root / "bin" / "mlserver"), "start", str(root)]


def body(rows: list[list[float]]) -> bytes:
    """An Open Inference Protocol request of ``rows`` (one FP64 tensor), as MLServer's sklearn runtime takes it."""
    return json.dumps({"inputs": [{"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP64",
                                   "data": [value for row in rows for value in row]}]}).encode()
