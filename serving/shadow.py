"""Shadow traffic: a sampled request to an alias that has a shadow is run again on the shadow's
version, after the primary answer is computed, and the two are compared. The caller never waits
for it and never sees it fail.

The Predictor hands a sampled request over with :meth:`ShadowRunner.offer`, which never blocks:
a bounded queue, and a full queue drops the request (counted as dropped). One thread per process,
started on first use (after the server forks its workers), loads the shadow version through the
same cache, reads the request's inputs for it (its features may differ), predicts and compares,
and adds up what it saw per shadow; every ``flush_s`` it appends those counts to the registry,
where the counts of every worker and server add up (``registry.shadows``).

A request is sampled by a hash of its ``X-Request-Key`` when it has one (the same key is shadowed
every time, or never), at random otherwise.

The same thread serves guarded canaries (``serving.guard``): it runs the baseline version on the
requests a candidate served, when the guard measures disagreement, and flushes and checks the
guards' counts with the shadows'.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.orm import Session

from modelyard.registry import shadows
from modelyard.registry.refs import ShadowTarget
from modelyard.serving.decode import decode

if TYPE_CHECKING:
    from modelyard.serving.guard import GuardMeter
    from modelyard.serving.service import Inputs, LoadedModel, PredictOptions, Predictor

log = logging.getLogger("modelyard.serving")
_SCALE = float(1 << 64)


def sampled(fraction: float, key: str | None, salt: bytes = b"shadow") -> bool:
    """Whether a request is in a ``fraction`` sample (shadowed; with another ``salt``, logged:
    ``serving.observe``): by a hash of its key, salted apart from the weighted alias's pick and
    from the other samples (which version a key gets says nothing of whether it is shadowed or
    logged), else at random."""
    if fraction >= 1.0:
        return True
    if key is None:
        return random.random() < fraction
    digest = hashlib.blake2b(key.encode(), digest_size=8, person=salt).digest()
    return int.from_bytes(digest, "big") / _SCALE < fraction


@dataclass(frozen=True)
class Job:
    name: str
    shadow: ShadowTarget
    inputs: Inputs
    options: PredictOptions
    primary: Any  # the primary's predictions
    primary_ms: float
    guard_version: int | None = None  # a guard's comparison: the candidate that served (``shadow``: the baseline)


class ShadowRunner:
    """This process's shadow runs (see the module's docstring)."""

    def __init__(self, predictor: Predictor, sessions: Callable[[], Session], *, max_queue: int = 1000,
                 flush_s: float = 2.0, on_drop: Callable[[], None] | None = None,
                 meter: GuardMeter | None = None) -> None:
        self._predictor = predictor
        self.meter = meter
        self._sessions = sessions
        self._flush_s = flush_s
        self._on_drop = on_drop
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self._counts: dict[int, shadows.Counts] = {}
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._thread: threading.Thread | None = None

    def offer(self, job: Job) -> None:
        """Queue a sampled request for its shadow; never blocks, never raises."""
        if self._pid != os.getpid():
            self._start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            if job.guard_version is not None:  # a comparison not made: the guard counts fewer samples
                return
            with self._lock:
                counts = self._counts_of(job.shadow.id)
                counts.requests += 1
                counts.dropped += 1
            if self._on_drop is not None:
                self._on_drop()

    def served(self, guard_id: int, version: int, ms: float, failed: bool) -> None:
        """Count a request a guarded candidate served (the thread that flushes it starts here)."""
        if self._pid != os.getpid():
            self._start()
        if self.meter is not None:
            self.meter.served(guard_id, version, ms, failed)

    def flush(self) -> None:
        """Append what this process counted to the registry, and check the guards counted (a
        report read here calls this first, so it includes this process's latest runs)."""
        if self.meter is not None:
            self.meter.flush(self._sessions)
        with self._lock:
            pending, self._counts = self._counts, {}
        if not pending:
            return
        db = self._sessions()
        try:
            for shadow_id, counts in pending.items():
                shadows.add_counts(db, shadow_id, counts)
        except Exception:  # the registry is out of reach: these counts are lost, serving goes on
            log.warning("could not record shadow counts", exc_info=True)
        finally:
            db.close()

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until every queued run is done (tests, and a report that wants them all)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._queue = queue.Queue(maxsize=self._queue.maxsize)  # a parent's queue is not this process's
            self._counts = {}
            self._thread = threading.Thread(target=self._run, name="shadow-runner", daemon=True)
            self._pid = os.getpid()
            self._thread.start()

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                job = self._queue.get(timeout=self._flush_s)
            except queue.Empty:
                job = None
            if job is not None:
                try:
                    self._shadow(job)
                finally:
                    self._queue.task_done()
            if time.monotonic() - last_flush >= self._flush_s:
                self.flush()
                last_flush = time.monotonic()

    def _shadow(self, job: Job) -> None:
        started = time.perf_counter()
        shadow = job.shadow
        try:
            model: LoadedModel = self._predictor.entry(self._sessions, job.name, shadow.version, shadow.sha256).value
            decoded = decode(job.inputs.rows(model), model.features, max_rows=self._predictor.options.max_rows,
                             may_hold_booleans=job.options.may_hold_booleans)
            predicted = model.predict(decoded.X)
        except Exception:  # noqa: BLE001 - a shadow that fails or refuses the input is counted, never raised
            if job.guard_version is not None:  # the baseline could not answer: nothing to compare
                return
            with self._lock:
                counts = self._counts_of(shadow.id)
                counts.requests += 1
                counts.failures += 1
                counts.add_latency(counts.primary_ms, job.primary_ms)
            return
        elapsed = (time.perf_counter() - started) * 1000
        rows, agreed, diff = compare(job.primary, predicted)
        if job.guard_version is not None:
            if self.meter is not None:
                self.meter.compared(shadow.id, job.guard_version, rows, agreed)
            return
        with self._lock:
            counts = self._counts_of(shadow.id)
            counts.requests += 1
            counts.compared += 1
            counts.rows += rows
            counts.rows_agreed += agreed
            if diff is not None:
                counts.add_diff(diff)
            counts.add_latency(counts.primary_ms, job.primary_ms)
            counts.add_latency(counts.shadow_ms, elapsed)

    def _counts_of(self, shadow_id: int) -> shadows.Counts:
        counts = self._counts.get(shadow_id)
        if counts is None:
            counts = self._counts[shadow_id] = shadows.Counts()
        return counts


def compare(primary: Any, shadow: Any) -> tuple[int, int, float | None]:
    """``(rows, rows that agree, largest absolute difference)`` of two predictions of the same
    rows: floats (a regressor's) agree within 1e-9 (relative) and report their difference;
    anything else (classes, labels) must be equal. Outputs of different shapes agree on no row."""
    a, b = np.asarray(primary), np.asarray(shadow)
    rows = len(a) if a.ndim else 1
    if a.shape != b.shape:
        return rows, 0, None
    if "f" in (a.dtype.kind, b.dtype.kind) and a.dtype.kind in "iuf" and b.dtype.kind in "iuf":  # regressors
        a, b = a.astype(np.float64), b.astype(np.float64)
        close = np.isclose(a, b, rtol=1e-9, atol=0.0)
        same = close.reshape(rows, -1).all(axis=1) if a.ndim else close.reshape(1)
        return rows, int(same.sum()), float(np.max(np.abs(a - b))) if a.size else 0.0
    equal = a == b
    same = equal.reshape(rows, -1).all(axis=1) if a.ndim else np.asarray(equal).reshape(1)
    return rows, int(same.sum()), None
