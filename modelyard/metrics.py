"""Prometheus metrics: requests and latency by model, version and status; cache behaviour;
uploads. With several gunicorn workers each writes its own files under
``PROMETHEUS_MULTIPROC_DIR`` (set by ``modelyard serve``) and ``/metrics`` adds them up."""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

HTTP_REQUESTS = Counter("modelyard_http_requests_total", "HTTP requests", ["endpoint", "method", "status"])
PREDICT_REQUESTS = Counter("modelyard_predict_requests_total", "Predict requests", ["model", "version", "status"])
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

PREDICT_ENDPOINTS = frozenset({"serving.predict", "serving.predict_default"})
UPLOAD_ENDPOINT = "registry.Versions"


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


def label_prediction(model: str, version: str) -> None:
    """Called by the predict view once the version is known."""
    g.metric_model = model
    g.metric_version = version


def install(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_record)


def render() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _start() -> None:
    g.metric_started = time.perf_counter()


def record_request(endpoint: str, method: str, status: int, seconds: float | None,
                   model: str = "", version: str = "") -> None:
    """Count one finished request; predicts also by model, version and status, with latency."""
    code = str(status)
    HTTP_REQUESTS.labels(endpoint, method, code).inc()
    if endpoint in PREDICT_ENDPOINTS:
        PREDICT_REQUESTS.labels(model, version, code).inc()
        if seconds is not None:
            PREDICT_SECONDS.labels(model, version, code).observe(seconds)
    elif endpoint == UPLOAD_ENDPOINT and method == "POST":
        UPLOADS.labels(code).inc()


def _record(response: Response) -> Response:
    started = g.get("metric_started")
    record_request(request.endpoint or "unmatched", request.method, response.status_code,
                   None if started is None else time.perf_counter() - started,
                   g.get("metric_model", ""), g.get("metric_version", ""))
    return response
