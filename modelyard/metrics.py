"""Prometheus metrics: requests and latency by model, version and status; cache behaviour;
uploads. With several gunicorn workers each writes its own files under
``PROMETHEUS_MULTIPROC_DIR`` (set by ``modelyard serve``) and ``/metrics`` adds them up.

Every piece here is a listener: :func:`observe` hears each finished request (the
``kind`` the answering view counts as says which are predicts and uploads; no endpoint name is
known here), :class:`CacheMetrics` the estimator cache, :func:`record_batch` the batchers.

Requests and cache hits, which come with every predict, are not counted by the request: a
multiprocess counter's ``inc`` takes a lock, reads the pid and writes its mmap file (~0.7 us,
five of them a predict, ~10% of a single-row request). The request appends what it saw to a
queue (one atomic ``deque.append``) and :func:`flush` adds them up per label set and writes each
sum once: every ``FLUSH_SECONDS`` on a thread of each process, and before every ``/metrics``
answer (so a scrape sees at least everything its own process answered before it; another
worker's last fraction of a second shows in the next scrape)."""

from __future__ import annotations

import atexit
import bisect
import logging
import math
import os
import threading
import time
from collections import deque
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
        _seen.append(_HIT)

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
    flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def observe(seen: Observation) -> None:
    """Count one finished request; predicts also by model, version and status, with latency
    (added to the metrics by the next :func:`flush`)."""
    _seen.append(seen)
    if _flusher is None:
        _start_flusher()


def flush() -> None:
    """Add up the requests and cache hits seen since the last flush and write each label set's
    sums to its metrics once."""
    with _flush_lock:
        taken = len(_seen)
        if not taken:
            return
        sums: dict[tuple[str, str, int, str | None, str, str, str], list[Any]] = {}
        hits = 0
        popleft = _seen.popleft
        for _ in range(taken):
            seen = popleft()
            if seen is _HIT:
                hits += 1
                continue
            key = (seen.endpoint, seen.method, seen.status, seen.kind, seen.model, seen.version, seen.alias)
            found = sums.get(key)
            if found is None:
                found = sums[key] = [0, []]
            found[0] += 1
            if seen.seconds is not None:
                found[1].append(seen.seconds)
        if hits:
            CACHE_HITS.inc(hits)
        for key, (count, seconds) in sums.items():
            _count(key, count, seconds)


def _count(key: tuple[str, str, int, str | None, str, str, str], count: int, seconds: list[float]) -> None:
    bound = _bound.get(key)
    if bound is None:
        bound = _bind(*key)
        if len(_bound) >= _MAX_BOUND:  # label sets come and go with models: keep the recent ones
            _bound.clear()
        _bound[key] = bound
    requests, predicts, predict_seconds, uploads, by_alias = bound
    requests.inc(count)
    if predicts is not None:
        predicts.inc(count)
        if seconds:
            _observe_all(predict_seconds, seconds)
        if by_alias is not None:
            by_alias.inc(count)
    elif uploads is not None:
        uploads.inc(count)


def _observe_all(histogram: Any, values: list[float]) -> None:
    """``histogram.observe(v)`` for each value, as one write per bucket and one to the sum: the
    bucket of a value is the first whose upper bound is >= it, as ``observe`` has it."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:  # another prometheus_client's layout: its own observe
            histogram.observe(value)
        return
    per_bucket = [0] * len(bounds)
    for value in values:
        per_bucket[bisect.bisect_left(bounds, value)] += 1
    total.inc(math.fsum(values))
    for bucket, n in zip(buckets, per_bucket):
        if n:
            bucket.inc(n)


FLUSH_SECONDS = 0.25
_HIT = object()  # a cache hit, in the queue of requests seen
_seen: deque[Any] = deque()
_flush_lock = threading.Lock()
_flusher: threading.Thread | None = None
_log = logging.getLogger("modelyard")


def _start_flusher() -> None:
    global _flusher
    with _flush_lock:
        if _flusher is None:
            _flusher = threading.Thread(target=_flush_every, name="modelyard-metrics", daemon=True)
            _flusher.start()


def _flush_every() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        try:
            flush()
        except Exception:  # a metric write failed: counting goes on with the next requests
            _log.exception("could not write the request metrics")


def _forked() -> None:
    """A forked worker has no flusher thread (threads do not survive a fork), and the requests
    its parent had not flushed are the parent's."""
    global _flusher, _flush_lock
    _flusher, _flush_lock = None, threading.Lock()
    _seen.clear()


os.register_at_fork(after_in_child=_forked)
atexit.register(flush)  # a worker stopping writes what it had not


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
