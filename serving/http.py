"""The predict routes over plain WSGI, answered in front of Flask.

A predict is the request a serving system answers thousands of times a second, and Flask's
per-request machinery (contexts, routing, hooks, teardown) costs more than a small model's
predict. :class:`PredictLane` wraps the Flask app: a ``POST`` to ``/predict`` or
``/models/<name>/<ref>/predict`` is answered by :class:`PredictHandler` directly, with the same
checks in the same order as every other route (auth 401/403, then the body's form 415/413/400/
422, then state 404), the same JSON error shape and the same metrics; every other request goes
to Flask untouched. The Flask views of these routes (``serving.api``) call the same handler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest, ClientDisconnected, HTTPException

from modelyard import metrics
from modelyard.http_errors import answer_for, error_body, error_headers
from modelyard.registry.auth import identify, require
from modelyard.registry.errors import InvalidInput, ModelyardError, TooLarge, UnsupportedMediaType
from modelyard.registry.schemas import parse_json
from modelyard.serving import service
from modelyard.serving.batching import Arrival
from modelyard.serving.decode import read_rows

if TYPE_CHECKING:
    from modelyard.runtime import Runtime

log = logging.getLogger("modelyard")

PREDICT_ROLE = "predictor"
PREDICT_ENDPOINT = "serving.predict"
DEFAULT_ENDPOINT = "serving.predict_default"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_JSON = ("Content-Type", "application/json")
_STATUS_LINE = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


@dataclass(frozen=True)
class Route:
    endpoint: str
    name: str | None  # None: the default model (``POST /predict``)
    ref: str


@dataclass
class Answer:
    status: int
    body: bytes
    headers: list[tuple[str, str]]
    model: str = ""  # metric labels, known once the version is resolved
    version: str = ""


def match(path: str) -> Route | None:
    """The predict route a WSGI ``PATH_INFO`` names, as Flask's router would match it."""
    if path == "/predict":
        return Route(DEFAULT_ENDPOINT, None, "production")
    if not (path.startswith("/models/") and path.endswith("/predict")):
        return None
    parts = path.split("/")
    if len(parts) != 5 or not parts[2] or not parts[3]:
        return None
    if not path.isascii():  # WSGI carries the path's UTF-8 bytes as latin-1 characters
        parts = path.encode("latin-1").decode("utf-8", "replace").split("/")
    return Route(PREDICT_ENDPOINT, parts[2], parts[3])


class PredictHandler:
    """Answers one predict request from its WSGI environ; knows nothing of Flask."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._anonymous_role: str = rt.config["auth"]["anonymous_role"]
        self._max_body_bytes: int = rt.config["serving"]["max_body_bytes"]
        self._default_model: str = rt.config["serving"]["default_model"]

    def __call__(self, environ: dict[str, Any], route: Route) -> Answer:
        db: Session | None = None

        def session() -> Session:
            nonlocal db
            if db is None:
                db = self._rt.sessions()
            return db

        name = route.name if route.name is not None else self._default_model
        batcher = self._rt.batchers.get(name)
        try:
            if batcher is None:
                return self._predict(environ, name, route, session, None)
            with batcher.arriving() as arrival:  # from here, a batch leader waits for this request
                return self._predict(environ, name, route, session, arrival)
        except ModelyardError as error:
            status, body, headers = answer_for(error)
            return Answer(status, orjson.dumps(body), [_JSON, *headers.items()])
        except HTTPException as error:  # the body over the limit, or the client gone mid-body
            return _error(error.code or 400, error.description or "")
        except Exception:
            log.exception("unhandled error")
            return _error(500, "internal server error")
        finally:
            if db is not None:
                db.close()

    def _predict(self, environ: dict[str, Any], name: str, route: Route, session: Callable[[], Session],
                 arrival: Arrival | None) -> Answer:
        rt = self._rt
        require(identify(session, environ.get("HTTP_AUTHORIZATION"), self._anonymous_role), PREDICT_ROLE)
        raw = self._body(environ)
        proba = _flag(environ.get("QUERY_STRING", ""), "proba")
        body = read_rows(raw) or parse_json(raw)
        result = service.predict(session, rt.store, rt.cache, name, route.ref, body, proba=proba,
                                 options=rt.serving, refs=rt.refs, may_hold_booleans=b"true" in raw or b"false" in raw,
                                 batchers=rt.batchers, arrival=arrival)
        answer = result.answer
        if route.name is None and result.single_record:
            answer["target_value"] = answer["predictions"][0]  # the tutorial's field
        return Answer(200, orjson.dumps(answer), [_JSON], name, str(answer["version"]))

    def _body(self, environ: dict[str, Any]) -> bytes:
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if mimetype != "application/json" and not mimetype.endswith("+json"):
            raise UnsupportedMediaType(mimetype)
        limit = self._max_body_bytes
        declared = environ.get("CONTENT_LENGTH", "")
        if declared.isdigit():
            size = int(declared)
            if size > limit:
                raise TooLarge(f"the body is {size} bytes; the limit is {limit}", errors={"max_body_bytes": limit})
            data = _read(environ["wsgi.input"], size) if size else b""
            if len(data) < size:  # the client went away mid-body
                raise ClientDisconnected()
            return data
        if "wsgi.input_terminated" not in environ:
            return b""  # no length and a stream the server does not end: nothing to read (as werkzeug)
        # Chunked: read up to one byte past the limit (werkzeug's bounded stream would stop at
        # the limit without saying so, and the cut body would read as malformed JSON).
        stream, chunks, total = environ["wsgi.input"], [], 0
        while total <= limit:
            chunk = _read(stream, limit + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise TooLarge(f"the body is over the limit of {limit} bytes", errors={"max_body_bytes": limit})
        return b"".join(chunks)


class PredictLane:
    """WSGI middleware: predict requests to :class:`PredictHandler`, the rest to ``app``."""

    def __init__(self, app: WSGIApp, handler: PredictHandler) -> None:
        self.app = app
        self.handler = handler

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)  # OPTIONS and 405s come from Flask's router
        route = match(environ.get("PATH_INFO", ""))
        if route is None:
            return self.app(environ, start_response)
        started = time.perf_counter()
        answer = self.handler(environ, route)
        metrics.record_request(route.endpoint, "POST", answer.status, time.perf_counter() - started,
                               answer.model, answer.version)
        headers = answer.headers + [("Content-Length", str(len(answer.body)))]
        start_response(_STATUS_LINE[answer.status], headers)
        return [answer.body]


def _error(status: int, message: str, errors: Any = None) -> Answer:
    headers = [_JSON, *error_headers(status).items()]
    return Answer(status, orjson.dumps(error_body(status, message, errors)), headers)


def _read(stream: Any, size: int) -> bytes:
    """Read from the client's body stream; whatever goes wrong there (a reset connection, a
    malformed chunk) is the client's doing and answers 400, not 500."""
    try:
        data: bytes = stream.read(size)
        return data
    except Exception as exc:  # noqa: BLE001 - the server's own stream errors have no common base
        raise BadRequest(f"the request body could not be read ({type(exc).__name__})") from None


def _flag(query: str, name: str) -> bool:
    if not query:
        return False
    values = [value for key, value in parse_qsl(query, keep_blank_values=True) if key == name]
    if not values:
        return False
    raw = values[0]
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise InvalidInput(f"query parameter {name!r} must be true or false, got {raw!r}", errors={name: raw})
