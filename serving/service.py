"""Serving: the :class:`Predictor` resolves a ref (database) -> loaded estimator (cache) -> predict."""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sklearn
from sqlalchemy.orm import Session

from modelyard.registry import queries
from modelyard.registry import refs as refs_module
from modelyard.registry.errors import InvalidInput
from modelyard.registry.refs import RefCache
from modelyard.registry.service import RemovedVersion
from modelyard.registry.storage import ArtifactStore
from modelyard.serving.batching import Arrival, Batchers
from modelyard.serving.cache import Entry, LRUCache
from modelyard.serving.decode import FeatureSpec, decode
from modelyard.serving.fastpath import CompiledPredict, Predict, compile_predict

CacheKey = tuple[str, int, str]  # (model name, version, sha256): a key never goes stale

_thread = threading.local()
log = logging.getLogger("modelyard.serving")


@dataclass(frozen=True)
class LoadedModel:
    estimator: Any
    features: FeatureSpec
    label_of: dict[Any, Any] | None
    has_proba: bool
    classes: tuple[Any, ...]  # the probability columns' classes, in order (empty: not a classifier)
    predict: Predict  # the estimator's predict, or the same answer without per-call checks
    fast_path: bool  # predict skips scikit-learn's per-call checks (see serving.fastpath)
    load_warnings: tuple[str, ...] = ()  # what this process's load raised


@dataclass(frozen=True)
class Options:
    """Serving settings, handed over by the app factory."""

    max_rows: int = 10_000
    batching_models: frozenset[str] = frozenset()
    batch_max_rows: int = 1024
    batch_max_wait_s: float = 0.002
    extra_globals: frozenset[str] = frozenset()  # [upload] extra_globals, checked at start

    def batches(self, name: str) -> bool:
        return name in self.batching_models or "*" in self.batching_models


@dataclass(frozen=True)
class Prediction:
    answer: dict[str, Any]  # ready to serialize as JSON
    single_record: bool  # the body was one bare record
    predicted: Any = None  # the estimator's own output, for a protocol that types its tensors
    probabilities: Any = None


def cache_key(name: str, version: int, sha256: str) -> CacheKey:
    return (name, version, sha256)


Sessions = Callable[[], Session]  # the request's session, opened on first call


class Predictor:
    """Resolve a ref -> the loaded estimator (cache) -> predict: what every protocol's route
    calls. Holds the artifact store, this process's estimator cache, the ref cache and the
    micro-batchers; knows nothing of HTTP."""

    def __init__(self, store: ArtifactStore, cache: LRUCache[CacheKey], refs: RefCache | None,
                 batchers: Batchers | None, options: Options = Options()) -> None:
        self.store = store
        self.cache = cache
        self.refs = refs
        self.batchers = batchers
        self.options = options

    def loaded(self, session: Sessions, name: str, ref: str) -> tuple[int, Entry]:
        """Resolve ``ref`` and return ``(version number, cache entry)``, loading on first use.

        ``session`` is called only when the database must be read beyond the ref cache's
        generation check (a resolution not cached, a version not loaded).
        """
        if self.refs is not None:
            resolved = self.refs.resolve(session, name, ref)
        else:
            resolved = refs_module.resolve_version_key(session(), name, ref)
        number = resolved.version
        return number, self.cache.get(cache_key(name, number, resolved.sha256),
                                      lambda: self._load(session, name, number))

    def predict(self, session: Sessions, name: str, ref: str, body: Any, *, proba: bool = False,
                may_hold_booleans: bool = True, arrival: Arrival | None = None) -> Prediction:
        """Predict with the version ``ref`` names.

        A model that batching is on for has its rows predicted together with concurrent
        requests' (``arrival``: this request was announced to its batcher, see
        :mod:`serving.batching`). Raises ModelNotFound / VersionNotFound (404), InvalidInput
        (422) for a body that does not fit the version's features or ``proba`` on a model
        without ``predict_proba``, TooLarge (413).
        """
        number, entry = self.loaded(session, name, ref)
        return self.predict_loaded(name, number, entry.value, body, proba=proba, may_hold_booleans=may_hold_booleans,
                                   arrival=arrival)

    def predict_loaded(self, name: str, number: int, model: LoadedModel, body: Any, *, proba: bool = False,
                       may_hold_booleans: bool = True, arrival: Arrival | None = None) -> Prediction:
        """:meth:`predict` with the version already resolved and loaded (:meth:`loaded`), for a
        protocol that reads the version's features to build ``body``."""
        _configure_this_thread()
        if proba and not model.has_proba:
            raise InvalidInput(
                f"version {number} of {name!r} has no predict_proba; ask without proba=true"
            )
        decoded = decode(body, model.features, max_rows=self.options.max_rows, may_hold_booleans=may_hold_booleans)
        batcher = self.batchers.get(name) if self.batchers is not None and model.features.types is None else None
        if batcher is not None:
            predicted = batcher.predict(model.predict, decoded.X, arrival)
        else:
            predicted = model.predict(decoded.X)
        predictions = plain(predicted)
        result: dict[str, Any] = {"model": name, "version": number, "predictions": predictions}
        if model.label_of is not None and getattr(predicted, "ndim", 2) == 1:
            result["labels"] = [model.label_of.get(p) for p in predictions]
        probabilities = None
        if proba:
            probabilities = model.estimator.predict_proba(decoded.X)
            result["probabilities"] = plain(probabilities)
            result["classes"] = list(model.classes)  # which class each probability column is
            if model.label_of is not None:
                result["class_labels"] = [model.label_of.get(c) for c in model.classes]
        return Prediction(result, decoded.single_record, predicted, probabilities)

    def cache_state(self, name: str, version: int, sha256: str) -> dict[str, Any]:
        """Whether this process has the version loaded, how long loading took, when it last served."""
        entry = self.cache.peek(cache_key(name, version, sha256))
        if entry is None:
            return {"loaded": False, "load_ms": None, "last_used": None, "fast_path": None}
        return {
            "serving_load_warnings": list(entry.value.load_warnings),
            "loaded": True,
            "load_ms": round(entry.load_ms, 3),
            "last_used": datetime.datetime.fromtimestamp(entry.last_used, datetime.UTC),
            "fast_path": entry.value.fast_path,
        }

    def forget(self, removed: Sequence[RemovedVersion]) -> None:
        """Drop deleted versions from this process's cache."""
        for version in removed:
            self.cache.evict(cache_key(version.name, version.version, version.sha256))

    def _load(self, session: Sessions, name: str, number: int) -> tuple[LoadedModel, int]:
        db = session()
        try:
            version = refs_module.resolve_version(db, name, str(number))
            db.expunge(version)  # keep its loaded attributes usable after the read ends
        finally:
            db.rollback()  # the row is all we need; release the connection before unpickling
        loaded_file = queries.load_estimator(self.store, version, extra=self.options.extra_globals)
        estimator = loaded_file.estimator
        for warning in loaded_file.warnings:
            if warning not in version.load_warnings:
                log.warning("loading %s version %s: %s", name, number, warning)
        classes = version.classes or []
        flat = bool(classes) and not isinstance(classes[0], list)
        label_of = dict(zip(classes, version.labels)) if version.labels and flat else None
        frame = version.input_kind == "dataframe"
        text = version.input_kind == "text"
        # A version that takes a DataFrame or texts is always served by its own predict.
        compiled = CompiledPredict(estimator.predict, False) if frame or text else compile_predict(estimator)
        loaded = LoadedModel(
            estimator=estimator,
            predict=compiled.predict,
            fast_path=compiled.fast,
            features=FeatureSpec.build(version.feature_names, version.feature_aliases,
                                       version.feature_types if frame else None,
                                       allow_nan=version.allow_nan, text=text),
            label_of=label_of,
            has_proba=version.has_proba,
            classes=tuple(classes) if flat else (),
            load_warnings=tuple(loaded_file.warnings),
        )
        return loaded, version.size_bytes


def plain(output: Any) -> Any:
    """An estimator's output as JSON-ready Python values: arrays of any dimension and dtype
    (numbers, booleans, strings, objects), sparse matrices, and the lists of arrays
    multi-output estimators answer (one per output)."""
    if isinstance(output, np.ndarray):
        return output.tolist() if output.dtype.kind != "O" else [plain(v) for v in output]
    if isinstance(output, (list, tuple)):
        return [plain(v) for v in output]
    if hasattr(output, "toarray"):  # a sparse matrix
        return output.toarray().tolist()
    if isinstance(output, np.generic):
        return output.item()
    return output


def _configure_this_thread() -> None:
    """Request values are finite by construction (orjson refuses NaN and numbers that overflow
    to infinity; the decoder admits only numbers and strings), so scikit-learn's per-call
    finiteness scan is skipped. Its configuration is per thread: each server thread sets it
    once, on its first predict."""
    if not getattr(_thread, "configured", False):
        sklearn.set_config(assume_finite=True)
        _thread.configured = True
