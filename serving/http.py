"""The predict routes over plain WSGI, answered in front of Flask.

A predict is the request a serving system answers thousands of times a second, and Flask's
per-request machinery (contexts, routing, hooks, teardown) costs more than a small model's
predict. :class:`PredictLane` wraps the Flask app: a ``POST`` matching the route table
(``serving.routes``) is answered by :class:`PredictHandler` directly, with the same checks in
the same order as every other route (auth 401/403, then the body's form 415/413/400/422, then
state 404), the same JSON error shape (``web.errors``), the same body rules (``web.body``) and
the same observers; every other request goes to Flask untouched. The Flask views of these
routes (``serving.api``) call the same handler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import HTTPException

from modelyard.registry.auth import AuthPolicy, anonymous
from modelyard.registry.errors import ModelyardError, UnsupportedMediaType
from modelyard.serving.batching import Arrival
from modelyard.serving.protocols import Request, WireProtocol, mlflow, native, v2
from modelyard.serving.routes import MLFLOW, NATIVE, PREDICT_KIND, PREDICT_ROLE, V2, Route, match
from modelyard.serving.service import Predictor
from modelyard.web.auth import authorize
from modelyard.web.body import mimetype_of, read_body
from modelyard.web.context import Observation, Observer
from modelyard.web.errors import answer_for, error_body, error_headers, unavailable

log = logging.getLogger("modelyard")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_JSON = ("Content-Type", "application/json")
_STATUS_LINE = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


@dataclass
class Answer:
    status: int
    body: bytes
    headers: list[tuple[str, str]]
    model: str = ""  # metric labels, known once the version is resolved
    version: str = ""
    alias: str = ""  # the alias that chose the version, if one did


class PredictHandler:
    """Answers one predict request from its WSGI environ; knows nothing of Flask."""

    def __init__(self, sessions: sessionmaker[Session], predictor: Predictor, *, auth: AuthPolicy,
                 max_body_bytes: int, default_model: str) -> None:
        self._sessions = sessions
        self._predictor = predictor
        self._auth = auth
        self._max_body_bytes = max_body_bytes
        self._default_model = default_model
        # The policy is fixed for the handler's life: whether a request without a token may
        # predict is decided once (authorize's answer for it is the same on every request).
        self._anonymous_predicts = anonymous(auth.anonymous_role).at_least(PREDICT_ROLE)

    def __call__(self, environ: dict[str, Any], route: Route) -> Answer:
        db: Session | None = None

        def session() -> Session:
            nonlocal db
            if db is None:
                db = self._sessions()
            return db

        name = route.name if route.name is not None else self._default_model
        batchers = self._predictor.batchers
        batcher = batchers.get(name) if batchers is not None else None
        try:
            if batcher is None:
                return self._predict(environ, name, route, session, None)
            with batcher.arriving() as arrival:  # from here, a batch leader waits for this request
                return self._predict(environ, name, route, session, arrival)
        except ModelyardError as error:
            status, body, headers = answer_for(error)
            return _error(status, body["message"], body.get("errors"), route.protocol, headers)
        except HTTPException as error:  # the body over the limit, or the client gone mid-body
            return _error(error.code or 400, error.description or "", protocol=route.protocol)
        except Exception as error:
            mapped = unavailable(error)
            if mapped is None:
                log.exception("unhandled error")
                return _error(500, "internal server error", protocol=route.protocol)
            status, body, headers = answer_for(mapped)
            return _error(status, body["message"], None, route.protocol, headers)
        finally:
            if db is not None:
                db.close()

    def _predict(self, environ: dict[str, Any], name: str, route: Route, session: Callable[[], Session],
                 arrival: Arrival | None) -> Answer:
        authorization = environ.get("HTTP_AUTHORIZATION")
        if authorization is not None or not self._anonymous_predicts:
            authorize(session, authorization, self._auth, role=PREDICT_ROLE)
        protocol = PROTOCOLS[route.protocol]
        mimetype = mimetype_of(environ.get("CONTENT_TYPE", ""))
        if not protocol.accepts(mimetype):
            raise UnsupportedMediaType(mimetype, expected=protocol.MEDIA_TYPES)
        raw = read_body(environ, self._max_body_bytes)
        read = protocol.read(raw, Request(mimetype, environ.get("QUERY_STRING", ""), environ.get(v2.HEADER_LENGTH),
                                          environ.get("HTTP_X_REQUEST_KEY")))
        prediction = self._predictor.predict(session, name, route.ref, read, read.options, arrival)
        reply = read.write(prediction, route)
        version = str(prediction.version)
        return Answer(200, reply.body, [*reply.headers, ("X-Model-Version", version)], name, version,
                      prediction.alias or "")


PROTOCOLS: dict[str, WireProtocol] = {NATIVE: native, MLFLOW: mlflow, V2: v2}


class PredictLane:
    """WSGI middleware: predict requests to :class:`PredictHandler`, the rest to ``app``."""

    def __init__(self, app: WSGIApp, handler: PredictHandler, observe: Observer) -> None:
        self.app = app
        self.handler = handler
        self.observe = observe

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)  # OPTIONS and 405s come from Flask's router
        route = match(environ.get("PATH_INFO", ""))
        if route is None:
            return self.app(environ, start_response)
        started = time.perf_counter()
        answer = self.handler(environ, route)
        self.observe(Observation(route.endpoint, "POST", answer.status, time.perf_counter() - started,
                                 PREDICT_KIND, answer.model, answer.version, answer.alias))
        headers = answer.headers + [("Content-Length", str(len(answer.body)))]
        start_response(_STATUS_LINE[answer.status], headers)
        return [answer.body]


def _error(status: int, message: str, errors: Any = None, protocol: str = NATIVE,
           headers: dict[str, str] | None = None) -> Answer:
    """An error in the shape of the route's protocol: ours, or the Open Inference Protocol's."""
    body = v2.error_body(message) if protocol == V2 else error_body(status, message, errors)
    extra = headers if headers is not None else error_headers(status)
    return Answer(status, orjson.dumps(body), [_JSON, *extra.items()])
