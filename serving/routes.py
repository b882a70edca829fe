"""The predict routes, in one table: the WSGI lane matches requests against it, the Flask views
that document them take their endpoint names from it, and the observers count what it marks.

A protocol (``protocols/native.py`` today; Open Inference Protocol V2 and MLflow's scoring API
next) adds its routes here and its bodies and answers in its own module.
"""

from __future__ import annotations

from typing import NamedTuple

from modelyard.registry.refs import DEFAULT_ALIAS

PREDICT_ROLE = "predictor"  # the least role that may predict
PREDICT_KIND = "predict"  # what the observers count these requests as
BLUEPRINT = "serving"  # the Flask blueprint the predict views (serving.api) are registered in
PREDICT_VIEW, MODEL_VIEW, DEFAULT_VIEW = "predict", "predict_model", "predict_default"
PREDICT_ENDPOINT = f"{BLUEPRINT}.{PREDICT_VIEW}"  # POST /models/<name>/<ref>/predict
MODEL_ENDPOINT = f"{BLUEPRINT}.{MODEL_VIEW}"  # POST /models/<name>/predict: its production version
DEFAULT_ENDPOINT = f"{BLUEPRINT}.{DEFAULT_VIEW}"  # POST /predict


class Route(NamedTuple):
    endpoint: str
    name: str | None  # None: the default model (``POST /predict``)
    ref: str


def match(path: str) -> Route | None:
    """The predict route a WSGI ``PATH_INFO`` names, as Flask's router would match it."""
    if path == "/predict":
        return Route(DEFAULT_ENDPOINT, None, DEFAULT_ALIAS)
    if not (path.startswith("/models/") and path.endswith("/predict")):
        return None
    parts = path.split("/")
    if len(parts) not in (4, 5) or not all(parts[2:-1]):
        return None
    if not path.isascii():  # WSGI carries the path's UTF-8 bytes as latin-1 characters
        parts = path.encode("latin-1").decode("utf-8", "replace").split("/")
    if len(parts) == 4:
        return Route(MODEL_ENDPOINT, parts[2], DEFAULT_ALIAS)
    return Route(PREDICT_ENDPOINT, parts[2], parts[3])
