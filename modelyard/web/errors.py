"""How errors answer over HTTP: one status per domain error family and one JSON shape (the
renderer every route uses: the Flask app's handlers, flask-smorest's HTTP errors and the predict
lane in front of Flask). A protocol with its own error shape (OIP's ``{"error": ...}``) renders
the same ``(status, message)`` its way."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from functools import partial
from http import HTTPStatus
from typing import Any

import flask_smorest
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from modelyard.registry.auth import Forbidden, Unauthorized
from modelyard.registry.errors import (
    Conflict,
    InvalidInput,
    MalformedBody,
    ModelyardError,
    NotFound,
    TooLarge,
    Unavailable,
    UnsupportedMediaType,
)

# Every domain error family and its status; the most specific base in an error's MRO wins.
STATUS_OF: dict[type[ModelyardError], int] = {
    MalformedBody: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidInput: 422,
    Unavailable: 503,
}

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="modelyard"'}

log = logging.getLogger("modelyard")


def status_of(error: ModelyardError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 500


def error_body(status: int, message: str, errors: Any = None) -> dict[str, Any]:
    """flask-smorest's error shape: ``{code, status, message, errors?}``."""
    body: dict[str, Any] = {"code": status, "status": HTTPStatus(status).phrase, "message": message}
    if errors:
        body["errors"] = errors
    return body


def error_headers(status: int) -> dict[str, str]:
    """A 401 says how to authenticate."""
    return CHALLENGE if status == 401 else {}


def answer_for(error: ModelyardError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``(status, body, headers)`` for a domain error; a 5xx is logged (a 4xx is the client's)."""
    status = status_of(error)
    if status >= 500:
        log.warning("%s: %s", type(error).__name__, error.message)
    return status, error_body(status, error.message, error.errors), error_headers(status)


class Api(flask_smorest.Api):  # type: ignore[misc]
    """flask-smorest's Api, answering HTTP errors in our shape: a message even where none was
    given, and the exception's own headers kept (a 405 must say ``Allow``)."""

    def handle_http_exception(self, error: HTTPException) -> Any:
        payload, code, headers = super().handle_http_exception(error)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            allowed = sorted(set(error.valid_methods) - {"HEAD", "OPTIONS"}) or sorted(error.valid_methods)
            methods = " or ".join(filter(None, [", ".join(allowed[:-1]), allowed[-1]]))
            payload["message"] = f"{request.method} is not allowed on {request.path}; it takes {methods}"
        payload.setdefault("message", _first_field_error(payload.get("errors")) or error.description)
        for key, value in error.get_headers():
            if key.lower() != "content-type":
                headers.setdefault(key, value)
        return payload, code, headers


Renderer = Callable[[str], dict[str, Any]]


def install(app: Flask, shapes: Mapping[str, Renderer] | None = None) -> None:
    """Domain errors answer with their status; a database that cannot be reached is a 503;
    anything else unexpected is a logged JSON 500. (HTTPExceptions, 404 405 413 ..., are answered
    by :class:`Api` in the same shape.) Under a path prefix of ``shapes`` (a protocol's), every
    error's message is rendered that protocol's way instead."""
    app.register_error_handler(ModelyardError, _domain_error)
    app.register_error_handler(Exception, _unexpected_error)
    if shapes:
        app.after_request(partial(_reshape, dict(shapes)))


def _reshape(shapes: dict[str, Renderer], response: Response) -> Response:
    if response.status_code < 400 or not response.is_json:
        return response
    for prefix, render in shapes.items():
        if request.path == prefix or request.path.startswith(prefix + "/"):
            body = response.get_json(silent=True)
            if isinstance(body, dict) and "message" in body:
                response.set_data(json.dumps(render(body["message"])))
            break
    return response


def unavailable(error: Exception) -> Unavailable | None:
    """The 503 an unexpected error stands for, when it says the registry database cannot be
    reached or has no connection free (SQLAlchemy's, or a driver's own from a connection used
    outside the pool); None for anything else. The cause is logged here: the client reads only
    that the database is unavailable."""
    from sqlalchemy import exc as sa_exc

    if isinstance(error, sa_exc.TimeoutError):
        mapped = Unavailable("the registry database has no free connection; try again")
    elif isinstance(error, sa_exc.OperationalError | sa_exc.DisconnectionError) or (
            type(error).__name__ == "OperationalError" and type(error).__module__.split(".")[0] in _DRIVERS):
        mapped = Unavailable("the registry database is unavailable; try again")
    else:
        return None
    log.warning("database error: %s: %s", type(error).__name__, (str(error).splitlines() or [""])[0])
    return mapped


_DRIVERS = {"psycopg", "psycopg2", "sqlite3"}


def _first_field_error(errors: Any) -> str | None:
    """"form field `labels`: must be a JSON list, e.g. [...]": the first validation error of a
    schema, as the message a user reads first."""
    if not isinstance(errors, dict):
        return None
    for location, fields in errors.items():
        if not isinstance(fields, dict):
            continue
        for name, messages in fields.items():
            while isinstance(messages, dict) and messages:
                messages = next(iter(messages.values()))
            if isinstance(messages, list) and messages and isinstance(messages[0], str):
                where = {"form": "form field", "files": "form field", "json": "field", "query": "query argument"}
                return f"{where.get(location, location)} `{name}`: {messages[0]}"
    return None


def _domain_error(error: ModelyardError) -> tuple[Response, int, dict[str, str]]:
    status, body, headers = answer_for(error)
    return jsonify(body), status, headers


def _unexpected_error(error: Exception) -> tuple[Response, int, dict[str, str]]:
    mapped = unavailable(error)
    if mapped is not None:
        return _domain_error(mapped)
    log.exception("unhandled error")
    return jsonify(error_body(500, "internal server error")), 500, {}
