"""Operational routes: liveness, readiness, metrics, what this server is, and the docs' assets."""

from __future__ import annotations

from flask import Blueprint as FlaskBlueprint
from flask import Response, jsonify, redirect, send_from_directory
from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from modelyard import __version__, metrics
from modelyard.config import Settings
from modelyard.registry.errors import ModelyardError
from modelyard.registry.refs import DEFAULT_ALIAS
from modelyard.web.auth import private
from modelyard.web.context import runtime, session
from modelyard.web.errors import unavailable

blp = Blueprint("ops", __name__, description="Health, readiness and server information")


@blp.route("/healthz")
@blp.response(200, {"type": "object"})
def healthz() -> ResponseReturnValue:
    """Liveness: the process is up"""
    return jsonify(status="ok")


@blp.route("/readyz")
@blp.response(200, {"type": "object"})
@blp.alt_response(503, description="Not ready: the database or the default model is unavailable")
def readyz() -> ResponseReturnValue:
    """Readiness: the database answers and the default model's production version loads"""
    rt = runtime()
    default_model = _settings().serving.default_model
    checks: dict[str, str] = {}
    ready = True
    try:
        session().execute(text("SELECT 1"))
        checks["database"] = "ok"
        version = rt.predictor.ready(session, default_model, DEFAULT_ALIAS)
        checks["default_model"] = f"ok: {default_model} version {version} loaded"
    except ModelyardError as exc:
        ready = False
        checks["default_model"] = f"unavailable: {exc.message}"
    except Exception as exc:  # the database, through the pool or a driver's own connection
        if not isinstance(exc, SQLAlchemyError) and unavailable(exc) is None:
            raise
        ready = False
        checks["database"] = f"unavailable: {type(exc).__name__}"
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    return jsonify(body), 200 if ready else 503


@blp.route("/metrics")
@blp.response(200, {"type": "string"}, content_type="text/plain")
@private("metrics")
def metrics_text() -> ResponseReturnValue:
    """Prometheus metrics

    Requests and latency by model, version and status; estimator cache hits, misses, loads,
    evictions and load time; uploads. Summed over every worker process.
    """
    return metrics.render()


@blp.route("/info")
@blp.response(200, {"type": "object"})
def info() -> ResponseReturnValue:
    """What this server is: version, default model and limits"""
    settings = _settings()
    return jsonify(
        name="modelyard",
        version=__version__,
        default_model=settings.serving.default_model,
        default_alias=DEFAULT_ALIAS,
        limits={
            "max_body_bytes": settings.serving.max_body_bytes,
            "max_rows": settings.serving.max_rows,
            "upload_max_bytes": settings.upload.max_bytes,
        },
    )


docs_assets = FlaskBlueprint("docs-assets", __name__)


@docs_assets.get("/")
def _home() -> ResponseReturnValue:
    """The root leads to the interactive API docs."""
    return redirect("/docs")


@docs_assets.get("/docs/assets/<path:filename>")
def _swagger_ui_asset(filename: str) -> Response:
    from swagger_ui_bundle import swagger_ui_path

    return send_from_directory(str(swagger_ui_path), filename, max_age=86400)


def _settings() -> Settings:
    settings: Settings = runtime().settings
    return settings
