"""The predict routes, in one table: the WSGI lane matches requests against it, the Flask views
that document them take their endpoint names from it, and the observers count what it marks.

Three protocols answer predictions: modelyard's own (``protocols/native.py``), MLflow's scoring
API (``protocols/mlflow.py``: ``/invocations``) and the Open Inference Protocol V2
(``protocols/v2.py``: ``/v2/.../infer``). Each route names its protocol; the protocol module
reads the body and writes the answer, and everything else (auth, limits, metrics, the
Predictor) is shared.
"""

from __future__ import annotations

from typing import NamedTuple

from modelyard.registry.refs import DEFAULT_ALIAS, DEFAULT_VERSION

PREDICT_ROLE = "predictor"  # the least role that may predict
PREDICT_KIND = "predict"  # what the observers count these requests as
BLUEPRINT = "serving"  # the Flask blueprint the predict views (serving.api) are registered in
V2_BLUEPRINT = "v2"  # the Open Inference Protocol's views (serving.v2_api)
V2_PREFIX = "/v2"  # every route of that protocol, whose errors read {"error": "..."}

PREDICT_VIEW, MODEL_VIEW, DEFAULT_VIEW = "predict", "predict_model", "predict_default"
INVOCATIONS_VIEW, DEFAULT_INVOCATIONS_VIEW = "invocations", "invocations_default"
INFER_VIEW, INFER_VERSION_VIEW = "infer", "infer_version"
PREDICT_ENDPOINT = f"{BLUEPRINT}.{PREDICT_VIEW}"  # POST /models/<name>/<ref>/predict
MODEL_ENDPOINT = f"{BLUEPRINT}.{MODEL_VIEW}"  # POST /models/<name>/predict: its production version
DEFAULT_ENDPOINT = f"{BLUEPRINT}.{DEFAULT_VIEW}"  # POST /predict
INVOCATIONS_ENDPOINT = f"{BLUEPRINT}.{INVOCATIONS_VIEW}"  # POST /models/<name>/<ref>/invocations
DEFAULT_INVOCATIONS_ENDPOINT = f"{BLUEPRINT}.{DEFAULT_INVOCATIONS_VIEW}"  # POST /invocations
INFER_ENDPOINT = f"{V2_BLUEPRINT}.{INFER_VIEW}"  # POST /v2/models/<name>/infer: its default version
INFER_VERSION_ENDPOINT = f"{V2_BLUEPRINT}.{INFER_VERSION_VIEW}"  # POST /v2/models/<name>/versions/<ref>/infer

NATIVE, MLFLOW, V2 = "native", "mlflow", "v2"


class Route(NamedTuple):
    endpoint: str
    name: str | None  # None: the default model (``POST /predict``, ``POST /invocations``)
    ref: str
    protocol: str = NATIVE


def match(path: str) -> Route | None:
    """The predict route a WSGI ``PATH_INFO`` names, as Flask's router would match it."""
    if path == "/predict":
        return Route(DEFAULT_ENDPOINT, None, DEFAULT_ALIAS)
    if path == "/invocations":
        return Route(DEFAULT_INVOCATIONS_ENDPOINT, None, DEFAULT_ALIAS, MLFLOW)
    if path.startswith("/models/"):
        parts = _parts(path, (4, 5))
        if parts is None:
            return None
        if parts[-1] == "predict":
            if len(parts) == 4:
                return Route(MODEL_ENDPOINT, parts[2], DEFAULT_ALIAS)
            return Route(PREDICT_ENDPOINT, parts[2], parts[3])
        if parts[-1] == "invocations" and len(parts) == 5:
            return Route(INVOCATIONS_ENDPOINT, parts[2], parts[3], MLFLOW)
        return None
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        parts = _parts(path, (5, 7))  # "", "v2", "models", name, ["versions", ref,] "infer"
        if parts is None:
            return None
        if len(parts) == 5:
            return Route(INFER_ENDPOINT, parts[3], DEFAULT_VERSION, V2)
        if parts[4] == "versions":
            return Route(INFER_VERSION_ENDPOINT, parts[3], parts[5], V2)
    return None


def _parts(path: str, lengths: tuple[int, ...]) -> list[str] | None:
    """The path's segments when there are as many as one of ``lengths`` and none inside is empty."""
    parts = path.split("/")
    if len(parts) not in lengths or not all(parts[1:]):
        return None
    if not path.isascii():  # WSGI carries the path's UTF-8 bytes as latin-1 characters
        parts = path.encode("latin-1").decode("utf-8", "replace").split("/")
    return parts
