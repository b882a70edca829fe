"""The app factory: reads the configuration and wires database, store, cache and blueprints."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Blueprint as FlaskBlueprint
from flask import Flask, Response, jsonify, redirect, send_from_directory
from flask.typing import ResponseReturnValue
from flask_smorest import Api
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from modelyard import __version__, metrics
from modelyard.config import ConfigError, load_config
from modelyard.ops import blp as ops_blp
from modelyard.registry import landlock, maintenance, sandbox, seed
from modelyard.registry.api import blp as registry_blp
from modelyard.registry.auth import ensure_admin_token
from modelyard.registry.db import make_engine, make_session_factory, upgrade_to_head
from modelyard.registry.errors import ModelyardError
from modelyard.registry.models import Alias, Model, ModelVersion
from modelyard.registry.refs import RefCache
from modelyard.registry.safety import allowlist
from modelyard.registry.storage import make_store
from modelyard.serving.api import blp as serving_blp
from modelyard.serving.batching import Batchers
from modelyard.serving.cache import LRUCache
from modelyard.serving.http import PredictHandler, PredictLane
from modelyard.serving.service import Options, Predictor
from modelyard.web import observe
from modelyard.web.auth import authorize_request
from modelyard.web.context import EXTENSION, Runtime, close_session
from modelyard.web.errors import answer_for, error_body

log = logging.getLogger("modelyard")

def create_app(overrides: Mapping[str, Mapping[str, Any]] | None = None, *, prepare: bool = True) -> Flask:
    """Build the modelyard WSGI app.

    ``overrides`` (``{section: {key: value}}``) win over env vars and ``config.toml``. With
    ``prepare`` the database is migrated to head, the default Iris model is seeded if absent,
    and production aliases are loaded into the cache; the gunicorn master prepares once and
    the workers it forks skip it.
    """
    config = load_config(overrides)
    _configure_logging(config["logging"]["level"])
    extra_globals = _extra_globals(config["upload"]["extra_globals"])
    # Serving maps records to the fitted feature order itself and hands estimators a plain
    # array; sklearn's reminder that the array has no column names is noise here.
    warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
    db = config["database"]
    options = Options.from_config(config, extra_globals)
    engine = make_engine(db["url"], pool_size=db["pool_size"], max_overflow=db["max_overflow"], echo=db["echo"])
    sessions = make_session_factory(engine)
    store = make_store(config["artifacts"]["store"], config["artifacts"]["root"])
    predictor = Predictor(
        store,
        LRUCache(config["cache"]["max_entries"], config["cache"]["max_bytes"], listener=metrics.CacheMetrics()),
        RefCache(engine),
        Batchers(options.batches, max_rows=options.batch_max_rows, max_wait_s=options.batch_max_wait_s,
                 on_batch=metrics.record_batch),
        options,
    )
    auth, serving = config["auth"], config["serving"]
    handler = PredictHandler(sessions, predictor, anonymous_role=auth["anonymous_role"],
                             max_body_bytes=serving["max_body_bytes"], default_model=serving["default_model"])
    rt = Runtime(config=config, engine=engine, sessions=sessions, store=store,
                 upload_limits=sandbox.Limits.from_config(config["upload"], extra_globals),
                 predictor=predictor, predict=handler, observers=(metrics.observe,))
    sandbox.preload("modelyard.cli")  # what the `modelyard` script imports; see sandbox.preload
    if prepare:
        _log_sandbox()
        _prepare(rt)

    app = Flask("modelyard")
    app.config.update(
        MAX_CONTENT_LENGTH=config["serving"]["max_body_bytes"],
        API_TITLE="modelyard",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",  # served from the swagger-ui-bundle package, no CDN
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "A modelyard token (`modelyard token create`); "
                               "anonymous callers get [auth] anonymous_role"}}},
            # Optional: the anonymous role may be enough (the tutorial's predict).
            "security": [{}, {"bearer": []}],
        },
    )
    app.extensions[EXTENSION] = rt
    observe.install(app)  # first, so its timer includes authentication
    metrics.expect_uploads()
    app.before_request(authorize_request)
    app.teardown_appcontext(close_session)

    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the schemas' field order
    api = _Api(app)
    for blp in (ops_blp, registry_blp, serving_blp):
        api.register_blueprint(blp)
    app.register_blueprint(docs_assets)
    app.register_error_handler(ModelyardError, _domain_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.wsgi_app = PredictLane(app.wsgi_app, handler, rt.observe)  # type: ignore[method-assign]
    return app


docs_assets = FlaskBlueprint("docs-assets", __name__)


@docs_assets.get("/")
def _home() -> ResponseReturnValue:
    """The root leads to the interactive API docs."""
    return redirect("/docs")


@docs_assets.get("/docs/assets/<path:filename>")
def _swagger_ui_asset(filename: str) -> Response:
    from swagger_ui_bundle import swagger_ui_path

    return send_from_directory(str(swagger_ui_path), filename, max_age=86400)


class _Api(Api):
    def handle_http_exception(self, error: HTTPException) -> Any:
        """flask-smorest's JSON error, with a message even where none was given and the
        exception's own headers kept (a 405 must say ``Allow``)."""
        payload, code, headers = super().handle_http_exception(error)
        payload.setdefault("message", _first_field_error(payload.get("errors")) or error.description)
        for key, value in error.get_headers():
            if key.lower() != "content-type":
                headers.setdefault(key, value)
        return payload, code, headers


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


def _prepare(rt: Runtime) -> None:
    upgrade_to_head(rt.engine)
    with rt.sessions() as session:
        if rt.config["serving"]["seed"] and seed.seed_iris(session, rt.store):
            log.info("seeded model 'iris' version 1 (alias production)")
        token_file = Path(rt.config["auth"]["admin_token_file"])
        if ensure_admin_token(session, token_file):
            log.info("created admin token 'admin'; it is in %s (readable by its owner only)", token_file)
        orphans = maintenance.collect_orphans(session, rt.store)["orphans"]
        if orphans:
            log.info("removed %d artifact blobs no version refers to (left by interrupted uploads)", len(orphans))
        _preload(rt, session)


def _preload(rt: Runtime, session: Any) -> None:
    """Load the versions behind the configured aliases so first requests do not pay for it."""
    aliases = rt.config["cache"]["preload_aliases"]
    if not aliases:
        return
    rows = session.execute(
        select(Model.name, Alias.name)
        .join(Alias, Alias.model_id == Model.id)
        .join(ModelVersion, Alias.version_id == ModelVersion.id)
        .where(Alias.name.in_(aliases))
    ).all()
    for model_name, alias in rows:
        try:
            version, entry = rt.predictor.loaded(lambda: session, model_name, alias)
            metrics.expect_predictions(model_name, version)
            log.info("preloaded %s:%s (version %s) in %.1f ms", model_name, alias, version, entry.load_ms)
        except ModelyardError as exc:
            log.warning("could not preload %s:%s: %s", model_name, alias, exc.message)


def _log_sandbox() -> None:
    version = landlock.abi()
    if version >= 6:
        log.info("upload trials run under Landlock ABI %s: no file changes, no TCP, no signals out", version)
    elif version:
        log.warning("upload trials run under Landlock ABI %s only: file changes are refused; TCP and signals "
                    "need ABI 4 and 6 (Linux 6.7, 6.12)", version)
    else:
        log.warning("this kernel has no Landlock: upload trials can write no byte to a file (RLIMIT_FSIZE) but "
                    "could create empty files, remove or rename files and open connections")


def _extra_globals(names: list[str]) -> frozenset[str]:
    try:
        extra = allowlist.importable(names)
    except ValueError as exc:
        raise ConfigError(f"[upload] extra_globals: {exc}") from None
    if extra:
        log.warning("uploads may also import %s ([upload] extra_globals)", ", ".join(sorted(extra)))
    return extra


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("modelyard").setLevel(level)
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _domain_error(error: ModelyardError) -> tuple[Response, int, dict[str, str]]:
    status, body, headers = answer_for(error)
    return jsonify(body), status, headers


def _unexpected_error(error: Exception) -> tuple[Response, int]:
    # HTTPExceptions (404, 405, 413 ...) never get here: flask-smorest's more specific handler
    # answers them in the same shape.
    log.exception("unhandled error")
    return jsonify(error_body(500, "internal server error")), 500
