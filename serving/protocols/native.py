"""modelyard's own predict protocol: a JSON body of records, rows or the common wrappers
(``instances``, ``inputs``, ``dataframe_split``, ``dataframe_records``), answered as
``{model, version, predictions, labels?, probabilities?}``; ``POST /predict`` (the tutorial's
route) also answers ``target_value`` for a single record."""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.serving.batching import Arrival
from modelyard.serving.decode import read_rows
from modelyard.serving.routes import Route
from modelyard.serving.service import Predictor, Sessions
from modelyard.web.body import is_json, parse_json, query_flag

MEDIA_TYPES = "application/json"
accepts = is_json


def answer(predictor: Predictor, session: Sessions, name: str, route: Route, raw: bytes, query: str,
           arrival: Arrival | None) -> tuple[int, bytes]:
    """``(version that answered, JSON answer)`` for a native predict request whose body is ``raw``."""
    proba = query_flag(query, "proba")
    body = read_rows(raw) or parse_json(raw)
    result = predictor.predict(session, name, route.ref, body, proba=proba,
                               may_hold_booleans=b"true" in raw or b"false" in raw, arrival=arrival)
    payload: dict[str, Any] = result.answer
    if route.name is None and result.single_record:
        payload["target_value"] = payload["predictions"][0]  # the tutorial's field
    return result.answer["version"], orjson.dumps(payload)
