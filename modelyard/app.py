"""The app factory: reads the settings once and builds everything whole (database, store, the
Predictor and its caches, the predict lane, blueprints, observers); nothing is patched in later."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import select

from modelyard import __version__, metrics, ops, ui
from modelyard.config import ConfigError, Settings, load_config
from modelyard.registry import landlock, maintenance, sandbox, seed, webhook_sender, webhooks
from modelyard.registry.alias_api import blp as aliases_blp
from modelyard.registry.api import blp as registry_blp
from modelyard.registry.auth import AuthPolicy, ensure_admin_token
from modelyard.registry.db import make_engine, make_session_factory, upgrade_to_head
from modelyard.registry.errors import ModelyardError
from modelyard.registry.models import Alias, Model, ModelVersion
from modelyard.registry.observe_api import blp as observe_blp
from modelyard.registry.refs import DEFAULT_ALIAS, RefCache
from modelyard.registry.safety import allowlist
from modelyard.registry.storage import make_store
from modelyard.registry.webhook_api import blp as webhooks_blp
from modelyard.serving import explain
from modelyard.serving.api import blp as serving_blp
from modelyard.serving.batching import Batchers
from modelyard.serving.cache import LRUCache
from modelyard.serving.guard import GuardMeter
from modelyard.serving.http import PredictHandler, PredictLane
from modelyard.serving.mapped import MappedStore
from modelyard.serving.observe import Observer
from modelyard.serving.protocols import v2
from modelyard.serving.routes import V2_PREFIX
from modelyard.serving.service import Options, Predictor
from modelyard.serving.shadow import ShadowRunner
from modelyard.serving.v2_api import blp as v2_blp
from modelyard.web import errors, observe
from modelyard.web.auth import authorize_request
from modelyard.web.context import EXTENSION, Runtime, close_session

log = logging.getLogger("modelyard")

def create_app(overrides: Mapping[str, Mapping[str, Any]] | None = None, *, prepare: bool = True) -> Flask:
    """Build the modelyard WSGI app, whole: every part gets its settings here, once.

    ``overrides`` (``{section: {key: value}}``) win over env vars and ``config.toml``. With
    ``prepare`` the database is migrated to head, the default Iris model is seeded if absent,
    and production aliases are loaded into the cache; the gunicorn master prepares once and
    the workers it forks skip it.
    """
    settings = load_config(overrides)
    _configure_logging(settings.logging.level)
    extra_globals = _extra_globals(settings.upload.extra_globals)
    # Serving maps records to the fitted feature order itself and hands estimators a plain
    # array; sklearn's reminder that the array has no column names is noise here.
    warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
    db, batching = settings.database, settings.batching
    engine = make_engine(db.url, pool_size=db.pool_size, max_overflow=db.max_overflow, pool_timeout=db.pool_timeout,
                         pool_recycle=db.pool_recycle, connect_timeout=db.connect_timeout, echo=db.echo)
    sessions = make_session_factory(engine)
    store = make_store(settings.artifacts.store, settings.artifacts.root, engine)
    options = Options(max_rows=settings.serving.max_rows, batching_models=frozenset(batching.models),
                      batch_max_rows=batching.max_rows, batch_max_wait_s=batching.max_wait_ms / 1000,
                      extra_globals=extra_globals)
    predictor = Predictor(
        store,
        LRUCache(settings.cache.max_entries, settings.cache.max_bytes, listener=metrics.CacheMetrics()),
        RefCache(engine),
        # None with batching off for every model: the lane then asks nothing per request
        Batchers(options.batches, max_rows=options.batch_max_rows, max_wait_s=options.batch_max_wait_s,
                 on_batch=metrics.record_batch) if options.batching_models else None,
        options,
    )
    predictor.shadows = ShadowRunner(predictor, sessions, max_queue=settings.shadow.max_queue,
                                     flush_s=settings.shadow.flush_seconds, on_drop=metrics.shadow_dropped,
                                     meter=GuardMeter(on_trip=metrics.guard_tripped))
    if settings.cache.mapped:
        predictor.mapped = MappedStore(settings.cache.mapped_root, min_bytes=settings.cache.mapped_min_bytes,
                                       extra=extra_globals)
    watch = settings.observe
    predictor.observer = Observer(sessions, sample_rate=watch.sample_rate, count_bins=watch.count_bins,
                                  logged_rows=watch.logged_rows,
                                  max_queue=watch.max_queue, flush_s=watch.flush_seconds,
                                  retention_days=watch.retention_days, min_samples=watch.min_samples,
                                  on_drop=metrics.observe_dropped, on_drift=metrics.drift_judged)
    policy = AuthPolicy(anonymous_role=settings.auth.anonymous_role,
                        private_reads=frozenset(settings.auth.private_reads),
                        protected_aliases=frozenset(settings.auth.protected_aliases))
    handler = PredictHandler(sessions, predictor, auth=policy,
                             max_body_bytes=settings.serving.max_body_bytes,
                             default_model=settings.serving.default_model)
    upload = settings.upload
    limits = sandbox.Limits(timeout_seconds=upload.trial_timeout_seconds, memory_bytes=upload.trial_memory_bytes,
                            max_expanded_bytes=upload.max_expanded_bytes, extra_globals=extra_globals,
                            reference_max_rows=settings.observe.reference_max_rows,
                            max_categories=settings.observe.max_categories, explainability=explain.explainability)
    rt = Runtime(settings=settings, auth=policy, engine=engine, sessions=sessions, store=store,
                 upload_max_bytes=upload.max_bytes, upload_limits=limits, predictor=predictor, predict=handler,
                 observers=(metrics.observe,), background=(webhook_sender.Sender(
                     sessions, webhooks.Policy.of(settings.webhooks), poll_seconds=settings.webhooks.poll_seconds),))
    if prepare:
        _log_sandbox()
        _prepare(rt, settings)
        if predictor.mapped is not None:  # copies of versions deleted through another server
            with sessions() as session:
                stale = predictor.mapped.keep_only(set(session.scalars(select(ModelVersion.sha256))))
            if stale:
                log.info("removed %d mapped copies of artifacts no version refers to", len(stale))

    app = Flask("modelyard")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.serving.max_body_bytes,
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
    api = errors.Api(app)
    for blp in (ops.blp, registry_blp, aliases_blp, observe_blp, webhooks_blp, serving_blp, v2_blp):
        api.register_blueprint(blp)
    app.register_blueprint(ops.docs_assets)
    app.register_blueprint(ui.bp)  # HTML pages: not in the OpenAPI document
    errors.install(app, {V2_PREFIX: v2.error_body})
    observer = rt.observers[0] if len(rt.observers) == 1 else rt.observe  # one call less per predict
    app.wsgi_app = PredictLane(app.wsgi_app, handler, observer)  # type: ignore[method-assign]
    return app


def _prepare(rt: Runtime, settings: Settings) -> None:
    upgrade_to_head(rt.engine)
    with rt.sessions() as session:
        if settings.serving.seed and seed.seed_iris(session, rt.store):
            log.info("seeded model 'iris' version 1 (alias %s)", DEFAULT_ALIAS)
        token_file = Path(settings.auth.admin_token_file)
        if ensure_admin_token(session, token_file):
            log.info("created admin token 'admin'; it is in %s (readable by its owner only)", token_file)
        orphans = maintenance.collect_orphans(session, rt.store)["orphans"]
        if orphans:
            log.info("removed %d artifact blobs no version refers to (left by interrupted uploads)", len(orphans))
        _preload(rt, session, settings.cache.preload_aliases)


def _preload(rt: Runtime, session: Any, aliases: Sequence[str]) -> None:
    """Load the versions behind the configured aliases so first requests do not pay for it."""
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
            started = time.perf_counter()
            version = rt.predictor.ready(lambda: session, model_name, alias)
            metrics.expect_predictions(model_name, version)
            log.info("preloaded %s:%s (version %s) in %.1f ms", model_name, alias, version,
                     (time.perf_counter() - started) * 1000)
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


def _extra_globals(names: Sequence[str]) -> frozenset[str]:
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
