"""Prometheus metrics: requests and latency by model, version and status; cache behaviour;
uploads. With several gunicorn workers each writes its own files under
``PROMETHEUS_MULTIPROC_DIR`` (set by ``modelyard serve``) and ``/metrics`` adds them up.

Every piece here is a listener: :func:`observe` hears each finished request (the
``kind`` the answering view counts as says which are predicts and uploads; no endpoint name is
known here), :class:`CacheMetrics` the estimator cache, :func:`record_batch` the batchers."""

from __future__ import annotations

import math
import os
from typing import Any

from flask import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from modelyard.web.context import Observation

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

HTTP_REQUESTS = Counter("modelyard_http_requests_total", "HTTP requests", ["endpoint", "method", "status"])
PREDICT_REQUESTS = Counter("modelyard_predict_requests_total", "Predict requests", ["model", "version", "status"])
ALIAS_REQUESTS = Counter("modelyard_alias_requests_total", "Predict requests whose version an alias chose "
                         "(a weighted alias's split, version by version)", ["model", "alias", "version", "status"])
PREDICT_SECONDS = Histogram("modelyard_predict_duration_seconds", "Predict request duration",
                            ["model", "version", "status"], buckets=_LATENCY_BUCKETS)
CACHE_HITS = Counter("modelyard_cache_hits_total", "Predictions served by an already loaded version")
CACHE_MISSES = Counter("modelyard_cache_misses_total", "Predictions that found their version not loaded")
CACHE_LOADS = Counter("modelyard_cache_loads_total", "Versions loaded into the cache")
CACHE_EVICTIONS = Counter("modelyard_cache_evictions_total", "Versions evicted from the cache")
CACHE_LOAD_SECONDS = Histogram("modelyard_cache_load_duration_seconds", "Time to load a version",
                               buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0))
BATCH_REQUESTS = Histogram("modelyard_batch_requests", "Requests answered by one batched predict call",
                           buckets=(1, 2, 3, 4, 6, 8, 16, 32, 64))
BATCH_ROWS = Histogram("modelyard_batch_rows", "Rows in one batched predict call",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024))
UPLOADS = Counter("modelyard_uploads_total", "Version uploads", ["status"])
SHADOW_DROPPED = Counter("modelyard_shadow_dropped_total", "Sampled requests not run on their shadow: the queue "
                         "was full")
OBSERVE_DROPPED = Counter("modelyard_observe_dropped_total", "Answered requests neither logged nor counted for "
                          "drift: the observer's queue was full")
DRIFT_PSI = Gauge("modelyard_drift_psi", "Population stability index of a version's feature (feature \"prediction\": "
                  "its outputs) over the last hour against its reference; NaN while its samples are insufficient",
                  ["model", "version", "feature"], multiprocess_mode="mostrecent")
DRIFT_SAMPLES = Gauge("modelyard_drift_samples", "Rows of a version's feature counted over the last hour, every "
                      "server's", ["model", "version", "feature"], multiprocess_mode="mostrecent")
GUARD_TRIPS = Counter("modelyard_guard_trips_total", "Guarded canaries this process returned to their state "
                      "before the canary", ["model", "alias", "metric"])

class CacheMetrics:
    """The estimator cache's listener."""

    def hit(self) -> None:
        CACHE_HITS.inc()

    def miss(self) -> None:
        CACHE_MISSES.inc()

    def load(self, seconds: float) -> None:
        CACHE_LOADS.inc()
        CACHE_LOAD_SECONDS.observe(seconds)

    def eviction(self) -> None:
        CACHE_EVICTIONS.inc()


def record_batch(requests: int, rows: int) -> None:
    """The micro-batchers' listener: how many requests and rows each call served."""
    BATCH_REQUESTS.observe(requests)
    BATCH_ROWS.observe(rows)


def shadow_dropped() -> None:
    """The shadow runner's listener: a sampled request it had no room for."""
    SHADOW_DROPPED.inc()


def observe_dropped() -> None:
    """The observer's listener: a request it had no room for."""
    OBSERVE_DROPPED.inc()


def drift_judged(report: dict[str, Any]) -> None:
    """The observer's listener: a version's drift over the last hour, as its periodic check found it."""
    model, version = report["model"], str(report["version"])
    judged = list(report["features"]) + ([report["predictions"]] if report["predictions"] else [])
    for feature in judged:
        DRIFT_SAMPLES.labels(model, version, feature["feature"]).set(feature["samples"])
        psi = feature["psi"]
        DRIFT_PSI.labels(model, version, feature["feature"]).set(math.nan if psi is None else psi)


def guard_tripped(found: dict[str, Any]) -> None:
    """The guard meter's listener: a guard this process tripped."""
    GUARD_TRIPS.labels(found["model"], found["alias"], found["metric"]).inc()


def expect_uploads() -> None:
    """Dashboards and alerts see a zero, not a gap, before the first upload."""
    for status in _UPLOAD_STATUSES:
        UPLOADS.labels(status)


_UPLOAD_STATUSES = ("201", "401", "403", "413", "415", "422")


def expect_predictions(model: str, version: int) -> None:
    """Show a version's predict series (at zero) before its first request: the preloaded
    production versions, so their request rate and error ratio are defined from the start."""
    for status in ("200", "422"):
        PREDICT_REQUESTS.labels(model, str(version), status)
        PREDICT_SECONDS.labels(model, str(version), status)


def render() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def observe(seen: Observation) -> None:
    """Count one finished request; predicts also by model, version and status, with latency."""
    key = (seen.endpoint, seen.method, seen.status, seen.kind, seen.model, seen.version, seen.alias)
    bound = _bound.get(key)
    if bound is None:
        bound = _bind(*key)
        if len(_bound) >= _MAX_BOUND:  # label sets come and go with models: keep the recent ones
            _bound.clear()
        _bound[key] = bound
    requests, predicts, predict_seconds, uploads, by_alias = bound
    requests.inc()
    if predicts is not None:
        predicts.inc()
        if seen.seconds is not None:
            predict_seconds.observe(seen.seconds)
        if by_alias is not None:
            by_alias.inc()
    elif uploads is not None:
        uploads.inc()


# A request's metric children by label values: looking them up (labels()) costs more than
# counting, and predicts repeat the same few label sets.
_Bound = tuple[Any, Any, Any, Any, Any]
_bound: dict[tuple[str, str, int, str | None, str, str, str], _Bound] = {}
_MAX_BOUND = 4096


def _bind(endpoint: str, method: str, status: int, kind: str | None, model: str, version: str,
          alias: str) -> _Bound:
    code = str(status)
    requests = HTTP_REQUESTS.labels(endpoint, method, code)
    if kind == "predict":
        return (requests, PREDICT_REQUESTS.labels(model, version, code), PREDICT_SECONDS.labels(model, version, code),
                None, ALIAS_REQUESTS.labels(model, alias, version, code) if alias else None)
    if kind == "upload" and method == "POST":
        return requests, None, None, UPLOADS.labels(code), None
    return requests, None, None, None, None
