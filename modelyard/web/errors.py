"""How domain errors answer over HTTP: one status per error family and one JSON shape, shared
by the Flask app and the predict lane in front of it."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

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
