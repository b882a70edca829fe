"""modelyard's own predict protocol: a JSON body of records, rows or the common wrappers
(``instances``, ``inputs``, ``dataframe_split``, ``dataframe_records``), answered as
``{model, version, predictions, labels?, probabilities?}``; ``POST /predict`` (the tutorial's
route) also answers ``target_value`` for a single record."""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.serving.decode import is_one_record
from modelyard.serving.protocols import JSON_HEADERS, BodyRead, Reply, Request
from modelyard.serving.routes import Route
from modelyard.serving.rows import read_rows
from modelyard.serving.service import Prediction, PredictOptions, plain
from modelyard.web.body import is_json, parse_json, query_flag

MEDIA_TYPES = "application/json"
accepts = is_json


class NativeRead(BodyRead):
    __slots__ = ()

    def write(self, prediction: Prediction, route: Route) -> Reply:
        tutorial = route.name is None and prediction.single_record
        predictions = plain(prediction.predicted)
        # One row predicted as an int, a string or a bool (a classifier's class, mostly), nothing
        # else asked: its answer is the same bytes every time for this loaded version (one name,
        # one number) and route kind, so it is written once and kept on the loaded version (at
        # most _KEPT_ANSWERS of them: a regressor's values differ each time and are written as
        # they come). One version's classes are all of one type: 1 and True never both occur.
        one = predictions[0] if (type(predictions) is list and len(predictions) == 1
                                 and prediction.probabilities is None and prediction.explanations is None) else None
        kind = type(one)
        if kind is not int and kind is not str and kind is not bool:
            return Reply(orjson.dumps(answer(prediction, predictions, tutorial)), JSON_HEADERS)
        kept = prediction.model.answers
        key = (tutorial, one)
        body = kept.get(key)
        if body is None:
            body = orjson.dumps(answer(prediction, predictions, tutorial))
            if len(kept) < _KEPT_ANSWERS:
                kept[key] = body
        return Reply(body, JSON_HEADERS)


_KEPT_ANSWERS = 64


def read(raw: bytes, request: Request) -> NativeRead:
    """A native predict request whose body is ``raw``: rows of numbers straight into an array
    when that is all it holds, else the JSON as the decoder reads it; ``?proba=true``,
    ``?explain=true``."""
    body = read_rows(raw) or parse_json(raw)
    # One record is read value by value whatever it holds: no need to look for booleans in it
    may_hold_booleans = is_one_record(body) or raw.find(b"true") >= 0 or raw.find(b"false") >= 0
    if not request.query and request.request_key is None:  # most requests: one of two options, made once
        return NativeRead(body, _HOLDING_BOOLEANS if may_hold_booleans else _NO_BOOLEANS)
    options = PredictOptions(proba=query_flag(request.query, "proba"), may_hold_booleans=may_hold_booleans,
                             request_key=request.request_key, explain=query_flag(request.query, "explain"))
    return NativeRead(body, options)


_HOLDING_BOOLEANS = PredictOptions(may_hold_booleans=True)
_NO_BOOLEANS = PredictOptions(may_hold_booleans=False)


def answer(prediction: Prediction, predictions: Any, tutorial: bool) -> dict[str, Any]:
    """``{model, version, predictions, labels?}`` (``predictions``: the prediction's values, made
    plain), with probabilities ``probabilities``, ``classes`` (each column's class) and
    ``class_labels``, and for the tutorial's route (``POST /predict``, one record) ``target_value``."""
    model, predicted = prediction.model, prediction.predicted
    result: dict[str, Any] = {"model": prediction.name, "version": prediction.version, "predictions": predictions}
    if model.label_of is not None and getattr(predicted, "ndim", 2) == 1:
        result["labels"] = list(map(model.label_of.get, predictions))
    if prediction.probabilities is not None:
        result["probabilities"] = plain(prediction.probabilities)
        result["classes"] = list(model.classes)
        if model.label_of is not None:
            result["class_labels"] = [model.label_of.get(c) for c in model.classes]
    if prediction.explanations is not None:
        result["explanations"] = prediction.explanations
    if tutorial:
        result["target_value"] = predictions[0]  # the tutorial's field
    return result
