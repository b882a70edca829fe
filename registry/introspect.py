"""What the registry records about a loaded estimator: its class, inputs, classes and methods,
and how serving must feed it (decided once, here, at upload)."""

from __future__ import annotations

import dataclasses
import platform
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelyard.registry.errors import InvalidArtifact, InvalidInput

NUMBER, STRING = "number", "string"


@dataclass(frozen=True)
class EstimatorInfo:
    estimator: str
    n_features: int | None
    feature_names: list[str] | None
    classes: list[Any] | None
    has_proba: bool
    # "array": a float64 NumPy array (the fast path). "dataframe": a pandas DataFrame with the
    # fitted column names, typed per feature_types (an estimator that selects columns by name or
    # encodes string columns). "text": a list of strings (a pipeline that starts with a text
    # vectorizer).
    input_kind: str = "array"
    feature_types: list[str] | None = None
    allow_nan: bool = False  # its scikit-learn tags say it takes NaN for a missing value
    load_warnings: list[str] = dataclasses.field(default_factory=list)
    pickled_with: str | None = None  # the scikit-learn version the file was written with
    example_predictions: list[Any] | None = None  # what it predicted for the upload's example (a replay compares)
    profile: dict[str, Any] | None = None  # the upload's reference, profiled (registry.profile), with its predictions
    explainable: bool | None = None  # ?explain=true can explain it (None: not checked)
    unexplainable: str | None = None  # why not


TEXT = "text"
PROBE_TEXTS = ["modelyard trial text", "the quick brown fox jumps over the lazy dog"]


def describe(obj: Any) -> EstimatorInfo:
    """Inspect a fitted estimator; raise :class:`InvalidArtifact` if it cannot predict."""
    if not callable(getattr(obj, "predict", None)):
        raise InvalidArtifact(f"the artifact holds a {_qualname(obj)}, which has no predict method")
    names = getattr(obj, "feature_names_in_", None)
    n_features = getattr(obj, "n_features_in_", None)
    if n_features is None:
        n_features = fitted_width(obj)
    classes = getattr(obj, "classes_", None)
    return EstimatorInfo(
        estimator=_qualname(obj),
        n_features=int(n_features) if n_features is not None else None,
        feature_names=[str(n) for n in names] if names is not None else None,
        classes=_plain_list(classes) if classes is not None else None,
        has_proba=callable(getattr(obj, "predict_proba", None)),
        allow_nan=_allows_nan(obj),
    )


def inspect(
    estimator: Any, *, example: Any = None,
    names_hint: list[str] | None = None, aliases: dict[str, str] | None = None,
) -> EstimatorInfo:
    """Describe a loaded estimator, decide how serving feeds it, and check that it predicts.

    The trial uses ``example`` (rows or records, as a client would send them) when given;
    otherwise rows read off the model's fitted state (:func:`fitted_rows`), then several probe
    rows (zeros, ones, standard normal draws), and the model is refused only when every one
    fails. A pipeline that starts with a text vectorizer takes
    strings. A numeric float64 array is tried first; an estimator fitted on a DataFrame that
    refuses it (columns selected by name, string columns encoded) gets a DataFrame whose
    string columns hold a category the estimator knows. Raises InvalidArtifact when nothing
    works, with the last error, and InvalidInput for an example that does not fit.
    """
    info = describe(estimator)
    if takes_text(estimator):
        texts = example_texts(example) if example is not None else PROBE_TEXTS
        said = _first_that_predicts(estimator, [texts], "a list of strings")
        return dataclasses.replace(info, input_kind=TEXT, n_features=1, feature_names=names_hint or ["text"],
                                   feature_types=[STRING], example_predictions=said if example is not None else None)
    n_features = info.n_features or (len(names_hint) if names_hint else None) or example_width(example)
    if not n_features:
        return info
    names = names_hint or info.feature_names or [f"x{i}" for i in range(n_features)]
    if example is not None:
        rows = example_rows(example, names, aliases or {})
        candidates = [np.array(rows, dtype=np.float64)] if _all_numeric(rows) else []
    else:
        rows = None
        candidates = fitted_rows(estimator, n_features) + probe_rows(n_features)
    try:
        if not candidates:
            raise InvalidArtifact("the example holds strings")
        said = _first_that_predicts(estimator, candidates, f"a numeric row of {n_features} features")
        if example is not None:
            info = dataclasses.replace(info, example_predictions=said)
        if info.allow_nan and not _predicts(estimator, np.full((1, n_features), np.nan)):
            return dataclasses.replace(info, allow_nan=False)  # the tags promised more than it does
        return info
    except InvalidArtifact as array_error:
        if info.feature_names is None:
            raise
        types, samples = _feature_types(estimator, info.feature_names)
        frame_rows = rows if rows is not None else [samples]
        try:
            said = _predict_quietly(estimator, make_frame(frame_rows, info.feature_names, types))
        except Exception:
            raise array_error from None
        # A ColumnTransformer's tags do not say what its transformers take: try a missing value
        # in every numeric column.
        missing = [None if kind == NUMBER else sample for kind, sample in zip(types, samples)]
        allow_nan = NUMBER in types and _predicts(estimator, make_frame([missing], info.feature_names, types))
        return dataclasses.replace(info, input_kind="dataframe", feature_types=types, allow_nan=allow_nan,
                                   example_predictions=said if rows is not None else None)


# Fitted state that holds points of the input space: training rows of neighbour models, support
# vectors, centres and class means (2-D, a row each), per-feature statistics (1-D, one row), and
# IsotonicRegression's thresholds (its one feature's values).
_STATE_ROWS = ("_fit_X", "support_vectors_", "cluster_centers_", "centroids_", "means_", "theta_",
               "subcluster_centers_", "X_fit_")
_STATE_ROW = ("mean_", "center_", "location_", "data_min_", "data_max_", "statistics_")
_STATE_COLUMN = ("X_thresholds_",)
_ROWS_PER_ARRAY = 3


def fitted_width(estimator: Any) -> int | None:
    """How many features an estimator that does not say (no ``n_features_in_``) takes, when its
    fitted state fixes it: IsotonicRegression's thresholds are one feature's values; a neighbour
    model's training rows or a linear model's coefficients have one column a feature."""
    for part in _input_side(estimator):
        if any(getattr(part, name, None) is not None for name in _STATE_COLUMN):
            return 1
        for name in _STATE_ROWS:
            value = getattr(part, name, None)
            if isinstance(value, np.ndarray) and value.ndim == 2 and value.shape[1] > 0:
                return int(value.shape[1])
        coef = getattr(part, "coef_", None)
        if isinstance(coef, np.ndarray) and coef.ndim in (1, 2) and coef.shape[-1] > 0:
            return int(coef.shape[-1])
    return None


def fitted_rows(estimator: Any, n_features: int) -> list[np.ndarray]:
    """Rows a model with no ``example`` is tried on first, read off its own fitted state (where
    a model answers, unlike zeros far from its data: a RadiusNeighborsClassifier finds no
    neighbour there). Each candidate is a few finite rows of ``n_features`` numbers."""
    found: list[np.ndarray] = []
    for part in _input_side(estimator):
        for name in _STATE_ROWS + _STATE_ROW + _STATE_COLUMN:
            value = getattr(part, name, None)
            if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf" or value.size == 0:
                continue
            if name in _STATE_COLUMN:
                value = value.reshape(-1, 1)
            elif name in _STATE_ROW:
                value = value.reshape(1, -1)
            if value.ndim != 2 or value.shape[1] != n_features:
                continue
            picks = np.unique(np.linspace(0, len(value) - 1, min(len(value), _ROWS_PER_ARRAY)).astype(int))
            rows = np.asarray(value[picks], dtype=np.float64)
            if np.isfinite(rows).all():
                found.append(rows)
    return found


def _input_side(estimator: Any) -> Iterator[Any]:
    """The estimator and what sees its raw input too: a pipeline's first step, a search's best
    estimator, a wrapper's fitted inner estimator (each in turn)."""
    seen: set[int] = set()
    part = estimator
    while part is not None and id(part) not in seen:
        seen.add(id(part))
        yield part
        steps = getattr(part, "steps", None)
        if steps:
            part = steps[0][1]
            continue
        part = next((getattr(part, name) for name in ("best_estimator_", "estimator_")
                     if getattr(part, name, None) is not None), None)


def probe_rows(n_features: int) -> list[np.ndarray]:
    """Rows a model is tried on when the upload has no example: zeros, ones, and three draws
    of a standard normal (seeded, so a refusal can be reproduced)."""
    normal = np.random.default_rng(0).standard_normal((3, n_features))
    return [np.zeros((1, n_features)), np.ones((1, n_features)), normal]


def _first_that_predicts(estimator: Any, candidates: list[Any], what: str) -> list[Any]:
    """The first candidate's predictions (as JSON values) the estimator makes without raising."""
    error: Exception | None = None
    for X in candidates:
        try:
            return _predict_quietly(estimator, X)
        except Exception as exc:  # noqa: BLE001 - the estimator's own complaint, reported below
            error = exc
    raise InvalidArtifact(
        f"the estimator cannot predict from {what}: {type(error).__name__}: {error}"
        + ("" if what == "a list of strings" else "; send an `example` field with rows it can predict")
    ) from None


def _predicts(estimator: Any, X: Any) -> bool:
    try:
        _predict_quietly(estimator, X)
        return True
    except Exception:  # noqa: BLE001
        return False


def takes_text(estimator: Any) -> bool:
    """A text vectorizer (CountVectorizer, TfidfVectorizer, HashingVectorizer) itself, or as
    the first step of a pipeline: it takes one string per row."""
    first = estimator
    while getattr(first, "steps", None):
        first = first.steps[0][1]
    return callable(getattr(first, "build_analyzer", None)) and first is not estimator


def _allows_nan(estimator: Any) -> bool:
    """What scikit-learn's tags say of the step that first sees the input (a pipeline's own tags
    do not pass its first step's on)."""
    first = estimator
    while getattr(first, "steps", None):
        first = first.steps[0][1]
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(first).input_tags.allow_nan)
    except Exception:  # noqa: BLE001 - no tags (not a scikit-learn estimator): assume not
        return False


def example_width(example: Any) -> int | None:
    rows = example if isinstance(example, list) else None
    if rows and isinstance(rows[0], list):
        return len(rows[0])
    return None


def example_rows(example: Any, names: list[str], aliases: dict[str, str]) -> list[list[Any]]:
    """An upload's ``example`` (one record, a list of records, or a list of rows) as rows in
    feature order; null stays None (missing). Raises InvalidInput naming what does not fit."""
    items = [example] if isinstance(example, dict) else example
    if not isinstance(items, list) or not items:
        raise InvalidInput("`example` must be a record, or a non-empty list of records or rows",
                           errors={"example": "shape"})
    column = {name: i for i, name in enumerate(names)}
    for alias, target in aliases.items():
        if target in column:
            column.setdefault(alias, column[target])
    rows = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            unknown = sorted(str(k) for k in item if k not in column)
            row: list[Any] = [_MISSING] * len(names)
            for key, value in item.items():
                if key in column:
                    row[column[key]] = value
            missing = [names[j] for j, v in enumerate(row) if v is _MISSING]
            if unknown or missing:
                raise InvalidInput(
                    f"`example` row {i} does not fit the model's features ({', '.join(names)})",
                    errors={"example": {"row": i, "unknown": unknown, "missing": missing}},
                )
        elif isinstance(item, list) and len(item) == len(names):
            row = list(item)
        else:
            raise InvalidInput(f"`example` row {i} must be a record or a row of {len(names)} values",
                               errors={"example": {"row": i}})
        if any(isinstance(v, (dict, list)) for v in row):
            raise InvalidInput(f"`example` row {i} holds a nested value", errors={"example": {"row": i}})
        rows.append(row)
    return rows


def example_texts(example: Any) -> list[str]:
    """A text model's example: a string, a list of strings, or records of one string each."""
    items = [example] if isinstance(example, (str, dict)) else example
    texts = []
    for item in items if isinstance(items, list) else [None]:
        if isinstance(item, dict) and len(item) == 1:
            item = next(iter(item.values()))
        if not isinstance(item, str):
            raise InvalidInput("`example` of a text model must be strings (or records of one string)",
                               errors={"example": "strings"})
        texts.append(item)
    if not texts:
        raise InvalidInput("`example` must not be empty", errors={"example": "empty"})
    return texts


def _all_numeric(rows: list[list[Any]]) -> bool:
    return all(v is None or (type(v) in (int, float)) for row in rows for v in row)


_MISSING = object()


def make_frame(rows: list[list[Any]], names: list[str] | tuple[str, ...], types: list[str] | tuple[str, ...]) -> Any:
    """The DataFrame serving hands a "dataframe" estimator: fitted column names, float64 numbers,
    object strings."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(names))
    for name, kind in zip(names, types):
        frame[name] = frame[name].astype(np.float64 if kind == NUMBER else object)
    return frame


def _predict_quietly(estimator: Any, X: Any) -> list[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicted: list[Any] = np.asarray(estimator.predict(X)).tolist()
        return predicted


def _feature_types(estimator: Any, names: list[str]) -> tuple[list[str], list[Any]]:
    """Which features are strings (an encoder fitted on them holds string categories, or a text
    vectorizer reads them), with a known category (or a probe text) as a sample value; every
    other feature is a number."""
    types = {name: NUMBER for name in names}
    samples: dict[str, Any] = {name: 0.0 for name in names}
    for columns, encoder in _encoders(estimator, names):
        if callable(getattr(encoder, "build_analyzer", None)):
            for column in columns:
                if column in types:
                    types[column], samples[column] = STRING, PROBE_TEXTS[0]
            continue
        for column, categories in zip(columns, getattr(encoder, "categories_", [])):
            values = np.asarray(categories)
            if column in types and values.dtype.kind in "OUS" and len(values):
                types[column] = STRING
                samples[column] = str(values[0])
    return [types[n] for n in names], [samples[n] for n in names]


def _encoders(estimator: Any, columns: list[str]) -> Iterator[tuple[list[str], Any]]:
    """(input columns, fitted encoder or text vectorizer) pairs found in pipelines, column
    transformers and unions."""
    if hasattr(estimator, "categories_") or callable(getattr(estimator, "build_analyzer", None)):
        own = getattr(estimator, "feature_names_in_", None)
        yield ([str(c) for c in own] if own is not None else columns), estimator
    for _name, step in getattr(estimator, "steps", []) or []:
        yield from _encoders(step, columns)
        break  # only the first step sees the raw input columns
    for _name, transformer, selected in getattr(estimator, "transformers_", []) or []:
        if hasattr(transformer, "fit") and selected is not None:
            yield from _encoders(transformer, _column_names(selected, columns))
    for _name, transformer in getattr(estimator, "transformer_list", []) or []:
        yield from _encoders(transformer, columns)


def _column_names(selected: Any, columns: list[str]) -> list[str]:
    values = selected if isinstance(selected, (list, tuple, np.ndarray)) else [selected]
    names = []
    for value in values:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(columns):
            names.append(columns[int(value)])
        elif isinstance(value, str):
            names.append(value)
    return names


def library_versions() -> dict[str, str]:
    import scipy
    import sklearn

    return {
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _plain_list(values: Any) -> list[Any]:
    """Class values as JSON-ready Python scalars; a multi-output estimator's classes (one array
    per output, of different lengths) as a list of lists."""
    if isinstance(values, list) and values and isinstance(values[0], np.ndarray):
        return [np.asarray(v).tolist() for v in values]
    return list(np.asarray(values).tolist())
