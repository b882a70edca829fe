"""The Open Inference Protocol V2 as Flask knows it: health, server and model metadata, model
readiness, and the infer routes' OpenAPI description and place in the router (their requests
are answered by :mod:`serving.http` in front of Flask). Every error under ``/v2`` reads
``{"error": "..."}`` (the app renders it, see ``web.errors``)."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_smorest import Blueprint
from sqlalchemy import text

from modelyard import __version__
from modelyard.registry import queries
from modelyard.registry.refs import DEFAULT_VERSION
from modelyard.serving.api import answer, predict_view
from modelyard.serving.protocols import v2
from modelyard.serving.routes import (
    INFER_ENDPOINT,
    INFER_VERSION_ENDPOINT,
    INFER_VERSION_VIEW,
    INFER_VIEW,
    V2,
    V2_BLUEPRINT,
    V2_PREFIX,
    Route,
)
from modelyard.web.auth import public, requires
from modelyard.web.context import runtime, session

blp = Blueprint(V2_BLUEPRINT, __name__, url_prefix=V2_PREFIX,
                description="Open Inference Protocol V2 (KServe, Triton): health, metadata, infer")

_ERROR = {"description": "An error, in the protocol's shape", "content": {"application/json": {"schema": {
    "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
_TENSOR = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
    "datatype": {"type": "string", "enum": list(v2.DTYPES)}, "parameters": {"type": "object"},
    "data": {"type": "array", "items": {}}}}
_INFER_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"}, "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": _TENSOR},
            "outputs": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string", "enum": [v2.PREDICT, v2.PROBA]}, "parameters": {"type": "object"}}}}}},
        "example": {"id": "42", "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64",
                                           "data": [5.1, 3.5, 1.4, 0.2]}],
                    "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}}}},
    "responses": {"200": {"description": "Output tensors (binary after a JSON header when asked)",
                          "content": {"application/json": {"schema": {"type": "object", "properties": {
                              "model_name": {"type": "string"}, "model_version": {"type": "string"},
                              "id": {"type": "string"}, "parameters": {"type": "object"},
                              "outputs": {"type": "array", "items": _TENSOR}}}}}},
                  **{str(status): {"description": description, "content": {"application/json": {"schema": {
                      "type": "object", "properties": {"error": {"type": "string"}}}}}}
                     for status, description in ((400, "Malformed request"), (401, "A token is needed"),
                                                 (403, "The token's role is too low"),
                                                 (404, "Unknown model or version"), (413, "Body over the limit"),
                                                 (415, "Not JSON or binary tensors"),
                                                 (422, "Inputs that do not fit the version"))},
                  "default": _ERROR},
}


def _read(view: Any) -> Any:
    """A GET of the protocol: any JSON object, errors in the protocol's shape."""
    return blp.doc(responses={"default": _ERROR})(blp.response(200, {"type": "object"})(view))


@blp.route("/health/live")
@_read
@public
def live() -> Response:
    """Server liveness"""
    return jsonify(live=True)


@blp.route("/health/ready")
@_read
@public
def ready() -> Response:
    """Server readiness: the registry database answers (503 while it cannot be reached)"""
    session().execute(text("SELECT 1"))
    return jsonify(ready=True)


@blp.route("")
@_read
@public
def server_metadata() -> Response:
    """Server metadata"""
    return jsonify(name="modelyard", version=__version__, extensions=["binary_tensor_data"])


@blp.route("/models/<name>")
@_read
@requires("reader")
def model_metadata(name: str) -> Response:
    """Model metadata: its default version's (production, else the latest) inputs and outputs, and every version"""
    return _metadata(name, DEFAULT_VERSION)


@blp.route("/models/<name>/versions/<ref>")
@_read
@requires("reader")
def version_metadata(name: str, ref: str) -> Response:
    """Version metadata: a version's (number or alias) inputs and outputs"""
    return _metadata(name, ref)


@blp.route("/models/<name>/ready")
@_read
@requires("reader")
def model_ready(name: str) -> Response:
    """Model readiness: its default version (production, else the latest) loads (and stays loaded)"""
    return _ready(name, DEFAULT_VERSION)


@blp.route("/models/<name>/versions/<ref>/ready")
@_read
@requires("reader")
def version_ready(name: str, ref: str) -> Response:
    """Version readiness: the version loads (and stays loaded)"""
    return _ready(name, ref)


@blp.route("/models/<name>/infer", methods=["POST"], endpoint=INFER_VIEW)
@predict_view(_INFER_DOC)
def infer(name: str) -> Response:
    """Infer with a model's default version: its production alias, else its latest version"""
    return answer(Route(INFER_ENDPOINT, name, DEFAULT_VERSION, V2))


@blp.route("/models/<name>/versions/<ref>/infer", methods=["POST"], endpoint=INFER_VERSION_VIEW)
@predict_view(_INFER_DOC)
def infer_version(name: str, ref: str) -> Response:
    """Infer with a version (a number or an alias)"""
    return answer(Route(INFER_VERSION_ENDPOINT, name, ref, V2))


def _metadata(name: str, ref: str) -> Response:
    db = session()
    version = queries.version_detail(db, name, ref)
    return jsonify(v2.metadata(name, queries.version_numbers(db, name), version))


def _ready(name: str, ref: str) -> Response:
    number = runtime().predictor.ready(session, name, ref)
    return jsonify(name=name, version=str(number), ready=True)
