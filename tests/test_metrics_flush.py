"""metrics.observe hands requests to a queue and flush() writes their sums: the same counts and
histogram as counting each request as it finished, from many threads at once."""

from __future__ import annotations

import random
import threading

from prometheus_client import CollectorRegistry, Histogram

from modelyard import metrics
from modelyard.web.context import Observation
from tests.threads import alongside


def _samples(histogram: Histogram) -> dict[str, float]:
    return {f"{s.name}{sorted(s.labels.items())}": s.value for metric in histogram.collect() for s in metric.samples
            if not s.name.endswith("_created")}


def test_a_flush_writes_the_histogram_observe_would_have() -> None:
    buckets = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
    one_by_one = Histogram("h", "h", buckets=buckets, registry=CollectorRegistry())
    in_bulk = Histogram("h", "h", buckets=buckets, registry=CollectorRegistry())
    rng = random.Random(7)
    # every bound exactly (a value on a bound is in that bound's bucket), around them, and past the last
    values = [*buckets, *(b * 1.000001 for b in buckets), *(rng.uniform(0, 12) for _ in range(500)), 0.0, 99.0]
    for value in values:
        one_by_one.observe(value)
    metrics._observe_all(in_bulk, values)
    expected, got = _samples(one_by_one), _samples(in_bulk)
    assert abs(got.pop("h_sum[]") - expected.pop("h_sum[]")) < 1e-9  # one fsum against a running sum
    assert got == expected  # every bucket and the count exactly


def _count(model: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("modelyard_predict_requests_total",
                                     {"model": model, "version": "1", "status": "200"}) or 0.0


def test_requests_seen_by_many_threads_are_all_counted_while_flushes_run() -> None:
    model = f"flush-{random.randrange(10**9)}"
    per_thread, threads = 2_000, 8

    def flushing(stop: threading.Event) -> None:
        while not stop.is_set():
            metrics.flush()

    def answering() -> None:
        for _ in range(per_thread):
            metrics.observe(Observation("serving.predict", "POST", 200, 0.001, "predict", model, "1"))

    alongside(flushing, answering, threads)
    metrics.flush()
    assert _count(model) == per_thread * threads
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("modelyard_predict_duration_seconds_count",
                                     {"model": model, "version": "1", "status": "200"}) == per_thread * threads


def test_the_flusher_thread_writes_without_being_asked() -> None:
    import time

    model = f"flusher-{random.randrange(10**9)}"
    metrics.observe(Observation("serving.predict", "POST", 200, 0.001, "predict", model, "1"))
    deadline = time.monotonic() + 5
    while _count(model) != 1.0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _count(model) == 1.0
