"""Serving: the :class:`Predictor` resolves a ref (database) -> loaded estimator (cache) -> predict."""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import sklearn
from sqlalchemy.orm import Session

from modelyard.registry import queries
from modelyard.registry import refs as refs_module
from modelyard.registry.errors import InvalidInput, PredictFailed, Unavailable
from modelyard.registry.refs import GuardTarget, RefCache, Resolved, ShadowTarget
from modelyard.registry.service import RemovedVersion
from modelyard.registry.storage import ArtifactStore
from modelyard.serving.batching import Arrival, Batchers
from modelyard.serving.cache import Entry, LRUCache
from modelyard.serving.decode import FeatureSpec, decode
from modelyard.serving.explain import EXPLAINABLE, explainer_for
from modelyard.serving.fastpath import CompiledPredict, Predict, compile_predict
from modelyard.serving.forest import ENSEMBLES, small_batches
from modelyard.serving.mapped import MappedStore, compiled_forest
from modelyard.serving.observe import Binner, Observer
from modelyard.serving.shadow import Job, ShadowRunner, sampled

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
    explainer: Any = "not loaded"  # ?explain=true's (serving.explain), or why the version has none
    version_id: int = 0  # the registry's id of the version (what the prediction log and drift counts name)
    binner: Binner | None = None  # its reference profile's bins (serving.observe); None: no reference
    # The answers' bytes of one-row predictions already written, by protocol's key (serving.protocols.native)
    answers: dict[Any, bytes] = field(default_factory=dict, compare=False, repr=False)

    def predict_both(self, X: Any) -> tuple[Any, Any]:
        """predict and predict_proba of the same rows, in one call (one batch)."""
        return self.predict(X), self.estimator.predict_proba(X)


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


class PredictOptions(NamedTuple):
    """How a request wants its prediction, as its protocol read it. (Tuples, not frozen
    dataclasses, for the values made on every request: a frozen dataclass's __init__ costs
    about a microsecond a field, which the lane measurably paid.)"""

    proba: bool | None = False  # also predict_proba; None: when the version has it (the OIP's default outputs)
    may_hold_booleans: bool = True  # False: the raw body has no true/false, rows convert in one NumPy call
    request_key: str | None = None  # X-Request-Key: a weighted alias serves the same key the same version
    explain: bool = False  # ?explain=true: each row's contributions and base value (serving.explain)
    observed: bool = True  # logged and counted for drift (serving.observe): traffic, not the registry's own calls


DEFAULT_OPTIONS = PredictOptions()
_UNOBSERVED = PredictOptions(observed=False)


class Inputs(Protocol):
    """What a protocol read from a request, made into the body the decoder reads for the version
    that answers (a protocol whose inputs are named by the version's features needs it)."""

    def rows(self, model: LoadedModel) -> Any:
        """The body for ``model``; raises InvalidInput for what does not fit it."""
        ...


@dataclass(frozen=True)
class Body:
    """Inputs that read the same for every version: records, rows, or the decoder's wrappers."""

    value: Any

    def rows(self, model: LoadedModel) -> Any:
        return self.value


class Prediction(NamedTuple):
    """One request's prediction: which version answered, and what its estimator said."""

    name: str
    version: int
    model: LoadedModel
    predicted: Any  # the estimator's own output
    probabilities: Any  # predict_proba's, when asked (None otherwise)
    single_record: bool  # the body was one bare record
    alias: str | None = None  # the alias that chose the version, if one did
    explanations: list[Any] | None = None  # per row, when asked: base_value, contributions, output


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
        self.shadows: ShadowRunner | None = None  # set by the app: runs sampled requests on an alias's shadow
        self.observer: Observer | None = None  # set by the app: the prediction log and drift counts
        self.mapped: MappedStore | None = None  # set by the app: one copy of a version's arrays per host

    def resolve(self, session: Sessions, name: str, ref: str) -> Resolved:
        """What ``ref`` names now (one version, or a weighted alias's split).

        ``session`` is called only when the database must be read beyond the ref cache's
        generation check (a resolution not cached).
        """
        if self.refs is not None:
            return self.refs.resolve(session, name, ref)
        return refs_module.resolve_version_key(session(), name, ref)

    def ready(self, session: Sessions, name: str, ref: str) -> int:
        """Load the version ``ref`` names (every version of a weighted alias's split) if this
        process has not yet; its number (a weighted alias's heaviest)."""
        resolved = self.resolve(session, name, ref)
        for target in resolved.targets:
            self.entry(session, name, target.version, target.sha256)
        self.entry(session, name, resolved.version, resolved.sha256)
        return resolved.version

    def entry(self, session: Sessions, name: str, number: int, sha256: str) -> Entry:
        """The loaded version, from this process's cache (loaded on first use)."""
        return self.cache.get(cache_key(name, number, sha256), lambda: self._load(session, name, number))

    def predict(self, session: Sessions, name: str, ref: str, inputs: Inputs,
                options: PredictOptions = DEFAULT_OPTIONS, arrival: Arrival | None = None) -> Prediction:
        """Predict with the version ``ref`` names: resolve, load, read the inputs for it, and
        call its estimator once (predict, and predict_proba in the same pass when asked).

        A model that batching is on for has its rows predicted together with concurrent
        requests' (``arrival``: announced to its model's batcher by the lane, see
        :mod:`serving.http`). Raises ModelNotFound / VersionNotFound
        (404), InvalidInput (422) for inputs that do not fit the version or ``proba`` on a model
        without ``predict_proba``, PredictFailed (422) when the estimator raises on the rows,
        TooLarge (413).
        """
        resolved = self.resolve(session, name, ref)
        number, sha256 = resolved.pick(options.request_key) if resolved.targets else (resolved.version, resolved.sha256)
        guard = resolved.guard
        if guard is not None and number in guard.candidates and self.shadows is not None:
            return self._guarded(guard, session, name, resolved, number, sha256, inputs, options, arrival)
        return self._predict(session, name, resolved, number, sha256, inputs, options, arrival)

    def _predict(self, session: Sessions, name: str, resolved: Resolved, number: int, sha256: str, inputs: Inputs,
                 options: PredictOptions, arrival: Arrival | None) -> Prediction:
        model: LoadedModel = self.entry(session, name, number, sha256).value
        body = inputs.rows(model)
        proba = model.has_proba if options.proba is None else options.proba
        if proba and not model.has_proba:
            raise InvalidInput(f"version {number} of {name!r} has no predict_proba; ask without proba=true")
        _configure_this_thread()
        shadow = resolved.shadow
        started = time.perf_counter()
        decoded = decode(body, model.features, max_rows=self.options.max_rows,
                         may_hold_booleans=options.may_hold_booleans)
        call = model.predict_both if proba else model.predict
        batcher = arrival.batcher if arrival is not None else None
        try:
            if batcher is not None and model.features.types is None:
                output = batcher.predict(call, decoded.X, arrival)
            else:
                output = call(decoded.X)
        except Exception as error:  # the estimator's own refusal of these rows: a 422 naming it
            raise PredictFailed(name, number, error) from error
        predicted, probabilities = output if proba else (output, None)
        if shadow is not None and self.shadows is not None and sampled(shadow.fraction, options.request_key):
            self.shadows.offer(Job(name, shadow, inputs, options, predicted,
                                   (time.perf_counter() - started) * 1000))
        explanations = None
        if options.explain:
            explainer = model.explainer
            if isinstance(explainer, str):
                raise InvalidInput(f"version {number} of {name!r} cannot be explained: {explainer}; explainable: "
                                   f"{EXPLAINABLE}")
            explanations = explainer(decoded.X, predicted)
        if self.observer is not None and options.observed:
            self.observer.offer(name, number, model, decoded.X, predicted, resolved.alias, options.request_key,
                                started)
        return Prediction(name, number, model, predicted, probabilities, decoded.single_record, resolved.alias,
                          explanations)

    def _guarded(self, guard: GuardTarget, session: Sessions, name: str, resolved: Resolved, number: int,
                 sha256: str, inputs: Inputs, options: PredictOptions, arrival: Arrival | None) -> Prediction:
        """:meth:`_predict` for a request a guarded candidate serves, counted for its guard: its
        latency, and whether its load or estimator failed (a request whose rows do not decode is
        the caller's mistake, not the candidate's, and is not counted); for a disagreement guard,
        the baseline version runs the same inputs after the answer, on the shadow runner."""
        runner = self.shadows
        assert runner is not None
        started = time.perf_counter()
        try:
            prediction = self._predict(session, name, resolved, number, sha256, inputs, options, arrival)
        except (PredictFailed, Unavailable):
            runner.served(guard.id, number, (time.perf_counter() - started) * 1000, True)
            raise
        elapsed = (time.perf_counter() - started) * 1000
        runner.served(guard.id, number, elapsed, False)
        if guard.metric == "disagreement":
            baseline = ShadowTarget(guard.id, guard.baseline_version, guard.baseline_sha256, 1.0)
            runner.offer(Job(name, baseline, inputs, options, prediction.predicted, elapsed, guard_version=number))
        return prediction

    def predictions(self, session: Sessions, name: str, ref: str, rows: Any) -> list[Any]:
        """The version's predictions for ``rows`` (records or rows), as JSON values: the registry's
        own calls (a replay, the UI's comparison), neither logged nor counted as traffic."""
        return list(plain(self.predict(session, name, ref, Body(rows), _UNOBSERVED).predicted))

    def flush_counts(self) -> None:
        """Write this process's shadow counts, prediction log and drift counts to the registry
        now, after the runs queued so far."""
        if self.shadows is not None:
            self.shadows.wait_idle(timeout=1.0)
            self.shadows.flush()
        if self.observer is not None:
            self.observer.flush()

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
        if self.mapped is not None:  # another version of the same file writes its copy again when it loads
            self.mapped.discard({version.sha256 for version in removed})

    def _load(self, session: Sessions, name: str, number: int) -> tuple[LoadedModel, int]:
        db = session()
        try:
            version = refs_module.resolve_version(db, name, str(number))
            db.expunge(version)  # keep its loaded attributes usable after the read ends
        finally:
            db.rollback()  # the row is all we need; release the connection before unpickling
        def load() -> Any:
            return queries.load_estimator(self.store, version, extra=self.options.extra_globals)

        loaded_file = load() if self.mapped is None else self.mapped.load(version.sha256, version.size_bytes, load)
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
        if type(estimator).__name__ in ENSEMBLES and not frame:  # not mapped (small, or mapping off)
            forest = compiled_forest(estimator)
            compiled = CompiledPredict(small_batches(forest, estimator.predict), True) if forest else compiled
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
            explainer=explainer_for(estimator, version.feature_names, version.profile),
            version_id=version.id,
            binner=Binner.of(version.profile, version.feature_names),
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
