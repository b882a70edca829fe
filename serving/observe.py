"""What serving observes of its own answers, at no cost a request can feel: the sampled
prediction log and the drift counts (``registry.observe``).

After a prediction the Predictor hands this process's :class:`Observer` the request's decoded rows
and outputs, when the request is sampled (``[observe] sample_rate``: by a hash of its
``X-Request-Key`` when sent, so a key is logged every time or never, else at random) or its
version has a reference profile (every request's rows are counted into the profile's bins). The
hand-over is one append to a bounded deque; a full one drops the request, counted in /metrics.
One thread per process, started on first use (after the server forks its workers), every
``[observe] flush_seconds`` places the rows in the profile's fixed bins (:class:`Binner`, the
same rule as ``registry.profile.bin_of``, vectorised) and writes the log rows and the counts in
one transaction, where the counts of every process and server add up. A failed write loses that
flush (logged); serving never waits for it and never sees it fail.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.orm import Session

from modelyard.registry import drift, observe
from modelyard.registry.errors import ModelyardError
from modelyard.registry.introspect import STRING
from modelyard.registry.observe import MISSING_BIN, BinKey, Logged
from modelyard.serving.shadow import sampled as shadow_sample

if TYPE_CHECKING:
    from modelyard.serving.service import LoadedModel

log = logging.getLogger("modelyard.serving")
PRUNE_EVERY_S = 3600.0
_TAKE_EVERY_S = 0.25


def sampled(rate: float, key: str | None) -> bool:
    """Whether a request is logged: the shadows' sampling, salted apart from theirs."""
    return shadow_sample(rate, key, b"observe")


@dataclass(frozen=True)
class _Feature:
    name: str
    column: int
    edges: np.ndarray | None  # a number feature's bin edges (None: a string feature)
    categories: Mapping[str, int] | None  # a string feature's bin of each profiled category (the rest: ``other``)


class Binner:
    """A version's reference profile, ready to count live rows into its bins."""

    def __init__(self, features: Sequence[_Feature], output: _Feature | None = None) -> None:
        self.features = tuple(features)
        self.output = output  # the predictions' bins, when the reference's predictions were profiled

    @classmethod
    def of(cls, profile: Mapping[str, Any] | None, feature_names: Sequence[str]) -> Binner | None:
        """The binner of a version's profile (None: no reference, nothing to count)."""
        if not profile:
            return None
        found = [feature for column, name in enumerate(feature_names)
                 if (feature := _feature(name, column, profile["features"].get(name))) is not None]
        return cls(found, _feature("", -1, profile.get("predictions")))

    def count(self, X: Any, predicted: Any, into: dict[tuple[bool, str, int], int]) -> None:
        """Add the bins of ``X``'s rows (an array in feature order, or a DataFrame) and of their
        ``predicted`` outputs to ``into``, keyed by (output, feature, bin); bin -1 counts missing
        values."""
        frame = hasattr(X, "columns")
        for feature in self.features:
            _add(feature, False, X[feature.name] if frame else X[:, feature.column], into)
        if self.output is not None and predicted is not None:
            _add(self.output, True, predicted, into)


def _feature(name: str, column: int, entry: Mapping[str, Any] | None) -> _Feature | None:
    if entry is None:
        return None
    if entry["kind"] == STRING:
        return _Feature(name, column, None, {c: i for i, c in enumerate(sorted(entry["counts"]))})
    if entry["edges"]:
        return _Feature(name, column, np.asarray(entry["edges"], dtype=np.float64), None)
    return None


def _add(feature: _Feature, output: bool, values: Any, into: dict[tuple[bool, str, int], int]) -> None:
    if feature.edges is not None:
        bins = number_bins(feature.edges, _floats(values))
        for bin_, n in zip(*np.unique(bins, return_counts=True)):
            key = (output, feature.name, int(bin_))
            into[key] = into.get(key, 0) + int(n)
        return
    assert feature.categories is not None
    other = len(feature.categories)
    for value in (values.tolist() if hasattr(values, "tolist") else values):
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        bin_ = MISSING_BIN if missing else feature.categories.get(str(value), other)
        key = (output, feature.name, bin_)
        into[key] = into.get(key, 0) + 1


def number_bins(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``registry.profile.bin_of`` of each value, at once; -1 for NaN (missing)."""
    inner = max(1, len(edges) - 1)
    bins = np.clip(np.searchsorted(edges, values, side="right"), 1, inner)
    bins[values < edges[0]] = 0
    bins[values > edges[-1]] = inner + 1
    bins[np.isnan(values)] = MISSING_BIN
    return bins


def _floats(values: Any) -> np.ndarray:
    if hasattr(values, "to_numpy"):
        return np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.asarray(values, dtype=np.float64)


class Observer:
    """This process's prediction log and drift counts (see the module's docstring)."""

    def __init__(self, sessions: Callable[[], Session], *, sample_rate: float = 0.01, count_bins: bool = True,
                 logged_rows: int = 100,
                 max_queue: int = 10_000, flush_s: float = 2.0, retention_days: int = 30, min_samples: int = 100,
                 on_drop: Callable[[], None] | None = None,
                 on_drift: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.sample_rate = sample_rate
        self.count_bins = count_bins
        self._sessions = sessions
        self._logged_rows = logged_rows
        self._max_queue = max_queue
        self._flush_s = flush_s
        self._retention_days = retention_days
        self._on_drop = on_drop
        self._on_drift = on_drift
        self._min_samples = min_samples
        self._checked = time.monotonic()
        # The first prune some minutes after the start (servers started together do not all prune
        # at once), then every PRUNE_EVERY_S.
        self._pruned = time.monotonic() - PRUNE_EVERY_S + random.uniform(60.0, 600.0)
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._logged: list[Logged] = []
        self._bins: dict[BinKey, int] = {}
        self._counted: set[tuple[str, int]] = set()  # versions counted since the last drift check
        self._pid: int | None = None

    def offer(self, name: str, number: int, model: LoadedModel, X: Any, predicted: Any, alias: str | None,
              key: str | None, started: float) -> None:
        """Hand over one answered request; never blocks, never raises. Kept only when it is
        sampled for the log or its version counts drift."""
        rate = self.sample_rate
        # sampled() inlined for a request without a key: this runs on every predict
        logged = rate > 0.0 and (random.random() < rate if key is None and rate < 1.0 else sampled(rate, key))
        if not logged and (model.binner is None or not self.count_bins):
            return
        if self._pid != os.getpid():
            self._start()
        pending = self._pending
        if len(pending) >= self._max_queue:
            if self._on_drop is not None:
                self._on_drop()
            return
        if logged:
            pending.append((name, number, model, X, predicted, alias, key,
                            (time.perf_counter() - started) * 1000, time.time()))
        else:
            pending.append((name, number, model, X, predicted, None, None, None, 0.0))

    def flush(self) -> None:
        """Bin and write what was handed over so far (the thread calls it every flush; tests and
        a report read call it to have it written now)."""
        with self._flushing:
            self._take()
            logged, self._logged = self._logged, []
            bins, self._bins = self._bins, {}
            if not logged and not bins:
                return
            db = self._sessions()
            try:
                observe.append(db, logged, bins)
            except Exception:  # the registry is out of reach: this flush is lost, serving goes on
                log.warning("could not write %d logged predictions and their drift counts", len(logged),
                            exc_info=True)
            finally:
                db.close()

    def _take(self) -> None:
        """Move what requests handed over into this flush's log rows and bin counts."""
        taken = []
        while self._pending:
            taken.append(self._pending.popleft())
        if taken:
            logged, bins = self._digest(taken)
            self._logged.extend(logged)
            for key, n in bins.items():
                self._bins[key] = self._bins.get(key, 0) + n

    def _digest(self, taken: list[tuple[Any, ...]]) -> tuple[list[Logged], dict[BinKey, int]]:
        from modelyard.serving.service import plain  # noqa: PLC0415 - service imports this module

        logged: list[Logged] = []
        by_version: dict[int, tuple[Any, list[Any], list[Any]]] = {}
        for name, number, model, X, predicted, alias, key, ms, at in taken:
            if model.binner is not None and self.count_bins:
                self._counted.add((name, number))
                _, inputs, outputs = by_version.setdefault(model.version_id, (model.binner, [], []))
                inputs.append(X)
                outputs.append(predicted)
            if ms is not None:
                n = len(X)
                logged.append(Logged(
                    version_id=model.version_id, at=dt.datetime.fromtimestamp(at, dt.UTC), alias=alias,
                    request_key=key, n_rows=n, rows=_json_ready(_head(X, self._logged_rows)),
                    outputs=_json_ready(plain(_first(predicted, self._logged_rows))), latency_ms=round(ms, 3)))
        bins: dict[BinKey, int] = {}
        bucket = observe.bucket_of(dt.datetime.now(dt.UTC))
        for version_id, (binner, inputs, outputs) in by_version.items():
            counted: dict[tuple[bool, str, int], int] = {}
            for X, predicted in _stacked(inputs, outputs):
                binner.count(X, predicted, counted)
            for (output, feature, bin_), n in counted.items():
                bins[(version_id, bucket, output, feature, bin_)] = n
        return logged, bins

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pending = collections.deque()  # a parent's requests are not this process's
            self._logged, self._bins, self._counted = [], {}, set()
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="observer", daemon=True).start()

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            time.sleep(min(_TAKE_EVERY_S, self._flush_s))
            try:
                if time.monotonic() - last_flush < self._flush_s:
                    with self._flushing:
                        self._take()  # often, so that the queue never holds more than a moment's requests
                    continue
                last_flush = time.monotonic()
                self.flush()
                if time.monotonic() - self._checked >= drift.CHECK_EVERY_S:
                    self._checked = time.monotonic()
                    self.check()
                if time.monotonic() - self._pruned >= PRUNE_EVERY_S:
                    self._pruned = time.monotonic()
                    self._prune()
            except Exception:  # noqa: BLE001 - the thread outlives any one flush
                log.warning("the observer's flush failed", exc_info=True)

    def check(self) -> None:
        """Judge the drift of the versions counted since the last check (``registry.drift.check``:
        the verdicts kept, the event when a feature becomes significant) and hand each report to
        the listener (the gauges)."""
        with self._flushing:
            counted, self._counted = self._counted, set()
        for name, number in sorted(counted):
            db = self._sessions()
            try:
                found = drift.check(db, name, str(number), min_samples=self._min_samples)
            except ModelyardError:  # deleted since
                continue
            finally:
                db.close()
            if self._on_drift is not None:
                self._on_drift(found)

    def _prune(self) -> None:
        db = self._sessions()
        try:
            observe.prune(db, self._retention_days)
        finally:
            db.close()


def _stacked(inputs: list[Any], outputs: list[Any]) -> list[tuple[Any, Any]]:
    """Many requests' rows and outputs as one array each (they bin in one pass), else request by
    request (DataFrames; outputs of several columns, which have no profile, are left out)."""
    pairs = list(zip(inputs, outputs))
    arrays = [(X, _one_output(y)) for X, y in pairs if isinstance(X, np.ndarray) and X.ndim == 2]
    others = [(X, _one_output(y)) for X, y in pairs if not (isinstance(X, np.ndarray) and X.ndim == 2)]
    if not arrays:
        return others
    outs = [y for _, y in arrays]
    joined = np.concatenate(outs) if all(y is not None for y in outs) else None
    return [(np.concatenate([X for X, _ in arrays]), joined), *others]


def _one_output(predicted: Any) -> Any:
    array = np.asarray(predicted) if not isinstance(predicted, list) else None
    return array if array is not None and array.ndim == 1 else None


def _head(X: Any, n: int) -> Any:
    if hasattr(X, "iloc"):
        head = X.iloc[:n]
        return head.astype(object).where(head.notna(), None).to_numpy().tolist()
    return np.asarray(X[:n]).tolist()


def _first(predicted: Any, n: int) -> Any:
    """The first ``n`` rows' outputs (a multi-output list holds one array per output)."""
    if isinstance(predicted, list):
        return [p[:n] for p in predicted]
    return predicted[:n]


def _json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value
