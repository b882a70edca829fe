"""Adaptive micro-batching: concurrent requests to one model answered by one ``predict`` call.

scikit-learn's per-call input validation, not the model, is most of a small predict's cost
(a one-row ``SVC.predict`` spends ~95% of its time validating), so when several requests for
one version are in flight together, one call on their stacked rows serves them all.

A request announces itself (:meth:`MicroBatcher.arriving`) as soon as the server knows its
model, before its body is read. When it reaches :meth:`MicroBatcher.predict` it queues its rows;
if nobody leads, it leads: it waits (at most ``max_wait``, and only while other announced
requests are still on their way), takes the queue (up to ``max_rows``, one version at a time),
predicts once, hands every request its own slice, and passes the lead to the oldest request
still queued. A lone request waits for nobody, so batching never slows an idle server, and no
request leads for longer than its own batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PredictFn = Callable[[np.ndarray], Any]  # an array, or a tuple of arrays (predict and predict_proba)


@dataclass
class Arrival:
    """A request announced to its model's batcher; ``queued`` once its rows are in the queue."""

    batcher: MicroBatcher
    queued: bool = False


@dataclass
class _Item:
    predict: PredictFn
    X: np.ndarray
    wake: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    finished: bool = False
    result: Any = None
    error: BaseException | None = None


class MicroBatcher:
    """The batcher of one model; its versions' rows are never mixed in one call."""

    def __init__(self, *, max_rows: int, max_wait_s: float,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch  # (requests, rows) per call, for metrics
        self._cond = threading.Condition()
        self._pending: list[_Item] = []
        self._leading = False
        self._arriving = 0  # announced, not yet queued
        self._expected = 1  # requests the last batch served: under load, wait for as many again
        self.calls = 0  # predict calls made, for tests

    @contextmanager
    def arriving(self) -> Iterator[Arrival]:
        """Announce a request from the moment its model is known until it queues its rows (or
        fails before): while requests are on their way, a leader waits for them."""
        arrival = Arrival(self)
        with self._cond:
            self._arriving += 1
        try:
            yield arrival
        finally:
            if not arrival.queued:
                with self._cond:
                    self._arriving -= 1
                    self._cond.notify_all()

    def predict(self, predict: PredictFn, X: np.ndarray, arrival: Arrival | None = None) -> Any:
        """``predict(X)``, possibly computed in one call with other requests' rows for the same
        ``predict`` (the same loaded version)."""
        item = _Item(predict, X)
        with self._cond:
            if arrival is not None and not arrival.queued:
                arrival.queued = True
                self._arriving -= 1
            self._pending.append(item)
            self._cond.notify_all()
            if not self._leading:
                self._leading = item.leads = True
        while True:
            if item.leads:
                self._lead(item)
            if item.finished:
                break
            item.wake.wait()
            item.wake.clear()
        if item.error is not None:
            raise item.error
        return item.result

    def _lead(self, own: _Item) -> None:
        """Run one batch (``own`` is the oldest queued item, so it is in it), then pass the lead."""
        deadline = time.perf_counter() + self.max_wait_s
        with self._cond:
            while self._rows(own.predict) < self.max_rows and (
                    self._arriving > 0 or len(self._pending) < self._expected):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Item] = []
            rest: list[_Item] = []
            rows = 0
            for item in self._pending:
                fits = not batch or rows + len(item.X) <= self.max_rows
                if item.predict == own.predict and fits:
                    batch.append(item)
                    rows += len(item.X)
                else:
                    rest.append(item)
            self._pending = rest
            self._expected = len(batch)
        self._run(batch, rows)
        with self._cond:
            if self._pending:
                successor = self._pending[0]
                successor.leads = True
                successor.wake.set()
            else:
                self._leading = False

    def _rows(self, predict: PredictFn) -> int:
        return sum(len(item.X) for item in self._pending if item.predict == predict)

    def _run(self, batch: list[_Item], rows: int) -> None:
        try:
            X = batch[0].X if len(batch) == 1 else np.concatenate([item.X for item in batch])
            predictions = batch[0].predict(X)
            self.calls += 1
            start = 0
            for item in batch:
                item.result = _rows_of(predictions, start, start + len(item.X))
                start += len(item.X)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:  # one request's rows may be what the estimator refused: each gets its own answer
                for item in batch:
                    try:
                        item.result = item.predict(item.X)
                    except Exception as own:
                        item.error = own
        except BaseException as exc:  # every request gets the failure, as if it had called alone
            for item in batch:
                item.error = exc
        finally:
            for item in batch:
                item.finished = True
                item.leads = False
                item.wake.set()
        if self._on_batch is not None:
            self._on_batch(len(batch), rows)


def _rows_of(output: Any, start: int, stop: int) -> Any:
    """One request's rows of a batch's output: an array, a list of arrays (one per output of a
    multi-output estimator), or a tuple of those (predict and predict_proba from one call)."""
    if isinstance(output, tuple):
        return tuple(_rows_of(part, start, stop) for part in output)
    if isinstance(output, list):
        return [part[start:stop] for part in output]
    return output[start:stop]


class Batchers:
    """One batcher per model that batching is on for (config), made on first use."""

    def __init__(self, enabled: Callable[[str], bool], *, max_rows: int, max_wait_s: float,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        self._enabled = enabled
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._by_model: dict[str, MicroBatcher] = {}
        self._lock = threading.Lock()

    def get(self, model: str) -> MicroBatcher | None:
        batcher = self._by_model.get(model)
        if batcher is None and self._enabled(model):
            with self._lock:
                batcher = self._by_model.setdefault(model, MicroBatcher(
                    max_rows=self._max_rows, max_wait_s=self._max_wait_s, on_batch=self._on_batch))
        return batcher
