"""MLflow's scoring protocol (``mlflow models serve``'s ``/invocations``): a JSON body with exactly
one of ``dataframe_split``, ``dataframe_records``, ``instances`` or ``inputs`` (and optionally
``params``, which scikit-learn's predict has no use for), or a ``text/csv`` body whose header row
names the columns; answered ``{"predictions": [...]}`` as MLflow's server does. Errors keep
modelyard's JSON shape."""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.registry.errors import InvalidInput, UnreadableBody
from modelyard.serving.protocols import JSON_HEADERS, BodyRead, Reply, Request
from modelyard.serving.routes import Route
from modelyard.serving.rows import Rows, read_rows
from modelyard.serving.service import Prediction, PredictOptions, plain
from modelyard.web.body import is_json, parse_csv, parse_json

INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CSV = "text/csv"
MEDIA_TYPES = f"application/json or {CSV}"


def accepts(mimetype: str) -> bool:
    return mimetype == CSV or is_json(mimetype)


class MlflowRead(BodyRead):
    __slots__ = ()

    def write(self, prediction: Prediction, route: Route) -> Reply:
        return Reply(orjson.dumps({"predictions": plain(prediction.predicted)}), JSON_HEADERS)


def read(raw: bytes, request: Request) -> MlflowRead:
    """An ``/invocations`` request: CSV, or JSON with exactly one input field, read once."""
    if request.mimetype == CSV:
        body: Any = {"dataframe_split": parse_csv(raw)}
    else:
        rows = read_rows(raw)  # rows of numbers under "inputs" or "instances": the quick way
        if rows is not None and rows.wrapper is None:  # a bare list of rows, which MLflow does not take
            raise _not_one_input([], "a JSON list")
        body = rows if rows is not None else _one_input(parse_json(raw))
    hold_booleans = isinstance(body, Rows) or b"true" in raw or b"false" in raw
    return MlflowRead(body, PredictOptions(may_hold_booleans=hold_booleans, request_key=request.request_key))


def _one_input(body: Any) -> dict[str, Any]:
    """The body's one input field, as the decoder reads it; MLflow's 400 for none or several."""
    keys = sorted(body) if isinstance(body, dict) else []
    given = [key for key in keys if key in INPUT_KEYS]
    if len(given) != 1 or set(keys) - {*INPUT_KEYS, "params"}:
        raise _not_one_input(keys, _describe(body, keys))
    key = given[0]
    value = body[key]
    if key in ("instances", "inputs") and isinstance(value, dict):
        value = _columns(value, key)  # a dict of columns: {"a": [1, 2], "b": [3, 4]}
        return {"dataframe_split": value}
    return {key: value}


def _not_one_input(keys: list[str], got: str) -> UnreadableBody:
    return UnreadableBody(f"the body must be a JSON object with exactly one of the fields {', '.join(INPUT_KEYS)} "
                          f"(and optionally params); got {got}", errors={"fields": keys})


def _columns(columns: dict[str, Any], key: str) -> dict[str, Any]:
    values = list(columns.values())
    if not all(isinstance(v, list) for v in values) or len({len(v) for v in values}) > 1:
        raise InvalidInput(f"{key} as an object must map each column to a list of values, all of one length")
    return {"columns": list(columns), "data": [list(row) for row in zip(*values, strict=True)]}


def _describe(body: Any, keys: list[str]) -> str:
    if not isinstance(body, dict):
        return f"a JSON {type(body).__name__}"
    return f"the fields {', '.join(keys)}" if keys else "an empty object"
