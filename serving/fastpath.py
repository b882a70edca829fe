"""A predict without scikit-learn's per-call input checks, for the estimators where those checks
are most of the cost.

scikit-learn checks its input on every call (fitted? a data frame? feature names, dtype, width,
finiteness). For one row of the seeded Iris SVC that is ~160 µs of a ~170 µs ``predict``
(scikit-learn 1.9; the SVM itself takes ~7 µs). The serving path only ever hands over what the
decoder builds: a float64, C-ordered, 2-D array of finite numbers of the model's width, on
which those checks cannot fail. For a few estimator families whose ``predict`` is a thin layer
over one kernel, this module calls the kernel directly:

- libsvm SVMs fitted on dense data with a named kernel (SVC, NuSVC, SVR, NuSVR);
- linear models whose ``predict`` (and ``decision_function``) are scikit-learn's own
  ``LinearModel`` / ``LinearClassifierMixin`` ones (LogisticRegression, LinearSVC,
  SGDClassifier, RidgeClassifier, Perceptron, LinearRegression, Ridge, Lasso, ElasticNet...);
- decision trees, through their own ``predict(X, check_input=False)`` (float32 input);
- Pipelines of StandardScaler, MinMaxScaler and passthrough steps ending in one of those.

A family is recognised by the method objects on the estimator's class, so a subclass that
overrides ``predict`` is not taken for its parent. Nothing is taken on trust: every fast predict
is compared at load with the estimator's own ``predict`` on probe rows (one row and 16;
identical type, dtype, shape and values required), and any difference or error leaves the
version on its own ``predict``. At call time, an input that is not what the decoder builds goes
to the estimator's own ``predict`` too, so its errors and warnings are scikit-learn's.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("modelyard")

Predict = Callable[[np.ndarray], Any]
Transform = Callable[[np.ndarray], np.ndarray]

try:  # private classes: only their method objects are compared, to recognise a family
    from sklearn.linear_model import ElasticNet, Ridge
    from sklearn.linear_model._base import LinearClassifierMixin, LinearModel, MultiOutputLinearModel
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler
    from sklearn.svm import _libsvm
    from sklearn.svm._base import LIBSVM_IMPL, BaseLibSVM, BaseSVC
    from sklearn.tree._classes import BaseDecisionTree

    # LinearModel's predict and decision function, and the overrides that only pass dense input
    # on to them (for a docstring, or a sparse-only branch)
    _LINEAR_PREDICTS: tuple[Any, ...] = (LinearModel.predict, MultiOutputLinearModel.predict, Ridge.predict)
    _LINEAR_DECISIONS: tuple[Any, ...] = (LinearModel._decision_function, ElasticNet._decision_function)
except ImportError:  # another scikit-learn layout: every estimator keeps its own predict
    BaseLibSVM = BaseSVC = BaseDecisionTree = LinearClassifierMixin = LinearModel = Pipeline = None
    _libsvm = LIBSVM_IMPL = None
    MinMaxScaler = StandardScaler = None
    _LINEAR_PREDICTS = _LINEAR_DECISIONS = ()

_PROBE_ROWS = (1, 16)  # one row (the common request, and shape slips) and several


@dataclass(frozen=True)
class CompiledPredict:
    predict: Predict  # takes the decoder's arrays; anything else goes to the estimator's predict
    fast: bool  # per-call checks skipped (verified at load)


def compile_predict(estimator: Any) -> CompiledPredict:
    """The quickest predict for ``estimator`` that answers exactly as ``estimator.predict``."""
    found = getattr(estimator, "n_features_in_", None)
    width = found if isinstance(found, int) and found > 0 else 0
    try:
        fast = _predict_for(estimator) if width else None
        if fast is not None and not _agrees(fast, estimator, width):
            log.warning("%s: the direct predict differs from scikit-learn's; using scikit-learn's",
                        type(estimator).__name__)
            fast = None
    except Exception as error:  # an estimator this module misread: its own predict is always right
        log.warning("%s: no direct predict (%s); using scikit-learn's", type(estimator).__name__, error)
        fast = None
    if fast is None:
        return CompiledPredict(estimator.predict, False)
    return CompiledPredict(_guarded(fast, estimator.predict, width), True)


_FLOAT64 = np.dtype(np.float64)


def _guarded(fast: Predict, slow: Predict, width: int) -> Predict:
    def predict(X: Any) -> Any:
        # ``is`` first: the decoder's arrays carry NumPy's one float64 dtype, and comparing a
        # dtype with ``==`` costs a conversion on every call
        if (type(X) is np.ndarray and (X.dtype is _FLOAT64 or X.dtype == _FLOAT64) and X.ndim == 2
                and X.shape[1] == width and X.shape[0] > 0 and X.flags.c_contiguous):
            return fast(X)
        return slow(X)

    return predict


def _agrees(fast: Predict, estimator: Any, width: int) -> bool:
    for X in _probes(width):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "X does not have valid feature names"
            expected = np.asarray(estimator.predict(X.copy()))
        got = fast(X.copy())
        if (type(got) is not np.ndarray or got.dtype != expected.dtype or got.shape != expected.shape
                or not np.array_equal(got, expected)):
            return False
    return True


@functools.lru_cache(maxsize=64)
def _probes(width: int) -> tuple[np.ndarray, ...]:
    """Probe rows for a width, drawn once: spread on both sides of zero, on several scales."""
    rng = np.random.default_rng(20261125)
    probes = tuple(rng.standard_normal((rows, width)) * 4.0 for rows in _PROBE_ROWS)
    for probe in probes:
        probe.flags.writeable = False  # shared: every check predicts on copies
    return probes


def _predict_for(estimator: Any) -> Predict | None:
    cls = type(estimator)
    if BaseLibSVM is not None and isinstance(estimator, BaseLibSVM):
        return _svm(estimator)
    if LinearClassifierMixin is not None and isinstance(estimator, LinearClassifierMixin):
        if (cls.predict is LinearClassifierMixin.predict
                and cls.decision_function is LinearClassifierMixin.decision_function):
            return _linear_classifier(estimator)
        return None
    if LinearModel is not None and isinstance(estimator, LinearModel):
        if cls._decision_function in _LINEAR_DECISIONS and cls.predict in _LINEAR_PREDICTS:
            return _linear_regressor(estimator)
        return None
    if BaseDecisionTree is not None and isinstance(estimator, BaseDecisionTree):
        if cls.predict is BaseDecisionTree.predict:
            tree_predict = estimator.predict  # its own switch: check_input=False wants float32
            return lambda X: tree_predict(X.astype(np.float32), check_input=False)
        return None
    if Pipeline is not None and cls is Pipeline:
        return _pipeline(estimator)
    return None


def _svm(svm: Any) -> Predict | None:
    if svm._sparse or not isinstance(svm.kernel, str) or svm.kernel == "precomputed":
        return None
    cls = type(svm)
    dense_predict = _libsvm_predict(svm) or svm._dense_predict
    if cls.predict is BaseSVC.predict:
        if svm.break_ties and svm.decision_function_shape == "ovr" and len(svm.classes_) > 2:
            return None  # predicts from decision_function: scikit-learn's own predict
        classes = svm.classes_
        # One row's answer by libsvm's class index (a float): a copy of a prepared one-element
        # array (the caller's to keep) costs half of converting the index and taking it from the classes.
        one_row = {float(index): classes[index:index + 1] for index in range(len(classes))}

        def predict(X: np.ndarray) -> Any:
            indices = dense_predict(X)
            if len(indices) == 1:
                answer = one_row.get(indices.item())
                if answer is not None:
                    return answer.copy()
            return classes.take(np.asarray(indices, dtype=np.intp))

        return predict
    if cls.predict is BaseLibSVM.predict:
        return dense_predict
    return None


def _libsvm_predict(svm: Any) -> Predict | None:
    """``svm._dense_predict`` as one call of libsvm with the fitted arrays bound once: for a named
    kernel and a 2-D float64 input, scikit-learn's own is that call after attribute lookups and
    a kernel hook that passes the input through (~2 µs of a one-row predict)."""
    cls = type(svm)
    if (_libsvm is None or cls._dense_predict is not BaseLibSVM._dense_predict
            or cls._compute_kernel is not BaseLibSVM._compute_kernel):
        return None
    libsvm_predict = _libsvm.predict
    support, vectors, counts = svm.support_, svm.support_vectors_, svm._n_support
    coef, intercept = svm._dual_coef_, svm._intercept_
    svm_type, kernel, degree = LIBSVM_IMPL.index(svm._impl), svm.kernel, svm.degree
    coef0, gamma, cache_size = svm.coef0, svm._gamma, svm.cache_size

    # Without probA and probB (the fitted Platt scaling): libsvm's predict (svm_predict) reads
    # neither, only predict_proba does, and its defaults were converted once when the module loaded;
    # two arrays fewer to convert is ~0.5 of the call's ~4.5 µs.
    def predict(X: np.ndarray) -> Any:
        return libsvm_predict(X, support, vectors, counts, coef, intercept, svm_type=svm_type,
                              kernel=kernel, degree=degree, coef0=coef0, gamma=gamma, cache_size=cache_size)

    return predict


def _dense(value: Any) -> bool:
    return type(value) is np.ndarray


def _linear_classifier(model: Any) -> Predict | None:
    coef, intercept, classes = model.coef_, model.intercept_, model.classes_
    if not (_dense(coef) and _dense(classes) and (_dense(intercept) or isinstance(intercept, float))):
        return None
    coef_t = coef.T if coef.ndim == 2 else coef

    def predict(X: np.ndarray) -> np.ndarray:
        scores = X @ coef_t + intercept
        if scores.ndim > 1 and scores.shape[1] == 1:
            scores = scores.reshape(-1)
        indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        return np.asarray(classes.take(indices, axis=0))

    return predict


def _linear_regressor(model: Any) -> Predict | None:
    coef, intercept = model.coef_, model.intercept_
    if not (_dense(coef) and (_dense(intercept) or isinstance(intercept, float))):
        return None
    weights = coef if coef.ndim == 1 else coef.T
    return lambda X: X @ weights + intercept


def _pipeline(pipeline: Any) -> Predict | None:
    if not pipeline.steps:
        return None
    transforms = []
    for _, step in pipeline.steps[:-1]:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        transform = _transform_for(step)
        if transform is None:
            return None
        transforms.append(transform)
    final = pipeline.steps[-1][1]
    if final is None or isinstance(final, str):
        return None
    last = _predict_for(final)
    if last is None:
        return None

    def predict(X: np.ndarray) -> Any:
        for transform in transforms:
            X = transform(X)
        return last(X)

    return predict


def _transform_for(step: Any) -> Transform | None:
    cls = type(step)
    if StandardScaler is not None and cls is StandardScaler and cls.transform is StandardScaler.transform:
        mean = step.mean_ if step.with_mean else None
        scale = step.scale_ if step.with_std else None
        if not ((mean is None or _dense(mean)) and (scale is None or _dense(scale))):
            return None

        def standardize(X: np.ndarray) -> np.ndarray:
            Y: np.ndarray = X - mean if mean is not None else X.copy()  # never the caller's array
            if scale is not None:
                Y /= scale
            return Y

        return standardize
    if MinMaxScaler is not None and cls is MinMaxScaler and cls.transform is MinMaxScaler.transform:
        factor, offset, clip = step.scale_, step.min_, bool(step.clip)
        low, high = step.feature_range
        if not (_dense(factor) and _dense(offset)):
            return None

        def min_max(X: np.ndarray) -> np.ndarray:
            Y: np.ndarray = X * factor
            Y += offset
            if clip:
                np.clip(Y, low, high, out=Y)
            return Y

        return min_max
    return None
