"""The predict routes as Flask knows them: their OpenAPI description and their place in the
router (OPTIONS, 405). Requests are answered by :mod:`serving.http`, in front of Flask."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, request
from flask_smorest import Blueprint

from modelyard.registry.refs import DEFAULT_ALIAS
from modelyard.serving.routes import (
    BLUEPRINT,
    DEFAULT_ENDPOINT,
    DEFAULT_INVOCATIONS_ENDPOINT,
    DEFAULT_INVOCATIONS_VIEW,
    DEFAULT_VIEW,
    INVOCATIONS_ENDPOINT,
    INVOCATIONS_VIEW,
    MLFLOW,
    MODEL_ENDPOINT,
    MODEL_VIEW,
    PREDICT_ENDPOINT,
    PREDICT_KIND,
    PREDICT_ROLE,
    PREDICT_VIEW,
    Route,
)
from modelyard.web.auth import counts_as, requires
from modelyard.web.context import runtime
from modelyard.web.observe import label_prediction

blp = Blueprint(BLUEPRINT, __name__, description="Predictions from any version, alias or latest")

_PREDICT_DOC: dict[str, Any] = {
    "parameters": [
        {
            "in": "query",
            "name": "proba",
            "schema": {"type": "boolean", "default": False},
            "description": "Also answer class probabilities (the version must have predict_proba)",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "description": "One record {feature: value}"},
                        {"type": "array", "description": "A list of records or of rows"},
                    ]
                },
                "examples": {
                    "record": {"value": {"sepal.length": 5.1, "sepal.width": 3.5,
                                         "petal.length": 1.4, "petal.width": 0.2}},
                    "instances": {"value": {"instances": [[5.1, 3.5, 1.4, 0.2]]}},
                    "inputs": {"value": {"inputs": [[5.9, 3.0, 5.1, 1.8]]}},
                    "dataframe_split": {"value": {"dataframe_split": {
                        "columns": ["sepal.length", "sepal.width", "petal.length", "petal.width"],
                        "data": [[5.1, 3.5, 1.4, 0.2]]}}},
                },
            }
        },
    },
    "responses": {
        "200": {
            "description": "Predictions, with labels when the version has class labels",
            "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {
                    "model": {"type": "string"},
                    "version": {"type": "integer"},
                    "predictions": {"type": "array", "items": {}},
                    "labels": {"type": "array", "items": {}},
                    "probabilities": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                    "classes": {"type": "array", "items": {},
                                "description": "With probabilities: the class of each probability column"},
                    "class_labels": {"type": "array", "items": {},
                                     "description": "With probabilities, when the version has labels: each column's"},
                    "target_value": {"description": "POST /predict with one record only"},
                },
            }}},
        },
    },
}
_ERRORS = {400: "Malformed JSON", 401: "A token is needed", 403: "The token's role is too low",
           404: "Unknown model, version or alias", 413: "Body or rows over the limit",
           415: "Body is not JSON", 422: "Input does not fit the version's features"}
_PREDICT_DOC["responses"].update({
    str(status): {"description": description,
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for status, description in _ERRORS.items()
})


def predict_view(doc: dict[str, Any]) -> Callable[[Any], Any]:
    """The marks every predict view carries, of any protocol: counted as a predict, the
    predictor role, and its OpenAPI description attached the way flask-smorest's ``doc`` does,
    without wrapping the view (the predict route stays one plain function call)."""

    def mark(view: Any) -> Any:
        view._apidoc = {"manual_doc": doc}
        return counts_as(PREDICT_KIND)(requires(PREDICT_ROLE)(view))

    return mark


@blp.route("/models/<name>/<ref>/predict", methods=["POST"], endpoint=PREDICT_VIEW)
@predict_view(_PREDICT_DOC)
def predict(name: str, ref: str) -> Response:
    """Predict with a version, an alias or latest

    `ref` is a version number (`3` or `v3`), an alias such as `production`, or `latest`.
    """
    return answer(Route(PREDICT_ENDPOINT, name, ref))


@blp.route("/models/<name>/predict", methods=["POST"], endpoint=MODEL_VIEW)
@predict_view(_PREDICT_DOC)
def predict_model(name: str) -> Response:
    """Predict with a model's production version

    The same as `/models/<name>/production/predict`.
    """
    return answer(Route(MODEL_ENDPOINT, name, DEFAULT_ALIAS))


@blp.route("/predict", methods=["POST"], endpoint=DEFAULT_VIEW)
@predict_view(_PREDICT_DOC)
def predict_default() -> Response:
    """Predict with the default model's production version

    The tutorial's route: a single record's answer also carries `target_value`, the first
    prediction.
    """
    return answer(Route(DEFAULT_ENDPOINT, None, DEFAULT_ALIAS))


_INVOCATIONS_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        "application/json": {
            "schema": {"type": "object", "description": "Exactly one of dataframe_split, dataframe_records, "
                                                        "instances, inputs (and optionally params)"},
            "examples": {
                "dataframe_split": {"value": {"dataframe_split": {
                    "columns": ["sepal.length", "sepal.width", "petal.length", "petal.width"],
                    "data": [[5.1, 3.5, 1.4, 0.2]]}}},
                "dataframe_records": {"value": {"dataframe_records": [
                    {"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4, "petal.width": 0.2}]}},
                "inputs": {"value": {"inputs": [[5.1, 3.5, 1.4, 0.2]]}},
            }},
        "text/csv": {"schema": {"type": "string"},
                     "example": "sepal.length,sepal.width,petal.length,petal.width\n5.1,3.5,1.4,0.2\n"},
    }},
    "responses": {
        "200": {"description": "As MLflow's scoring server answers",
                "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "predictions": {"type": "array", "items": {}}}}}}},
        **{key: value for key, value in _PREDICT_DOC["responses"].items() if key != "200"},
    },
}


@blp.route("/models/<name>/<ref>/invocations", methods=["POST"], endpoint=INVOCATIONS_VIEW)
@predict_view(_INVOCATIONS_DOC)
def invocations(name: str, ref: str) -> Response:
    """Predict with MLflow's scoring protocol

    The body `mlflow models serve` takes (JSON or CSV); the answer is `{"predictions": [...]}`.
    """
    return answer(Route(INVOCATIONS_ENDPOINT, name, ref, MLFLOW))


@blp.route("/invocations", methods=["POST"], endpoint=DEFAULT_INVOCATIONS_VIEW)
@predict_view(_INVOCATIONS_DOC)
def invocations_default() -> Response:
    """Predict with MLflow's scoring protocol, the default model's production version"""
    return answer(Route(DEFAULT_INVOCATIONS_ENDPOINT, None, DEFAULT_ALIAS, MLFLOW))


def answer(route: Route) -> Response:
    # Served here only when the app runs without the predict lane in front (see serving.http).
    answer = runtime().predict(request.environ, route)
    label_prediction(answer.model, answer.version, answer.alias)
    return Response(answer.body, status=answer.status, headers=answer.headers)
