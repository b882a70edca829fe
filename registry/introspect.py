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

from registry.errors import InvalidArtifact

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
    # encodes string columns).
    input_kind: str = "array"
    feature_types: list[str] | None = None


def describe(obj: Any) -> EstimatorInfo:
    """Inspect a fitted estimator; raise :class:`InvalidArtifact` if it cannot predict."""
    if not callable(getattr(obj, "predict", None)):
        raise InvalidArtifact(f"the artifact holds a {_qualname(obj)}, which has no predict method")
    names = getattr(obj, "feature_names_in_", None)
    n_features = getattr(obj, "n_features_in_", None)
    classes = getattr(obj, "classes_", None)
    return EstimatorInfo(
        estimator=_qualname(obj),
        n_features=int(n_features) if n_features is not None else None,
        feature_names=[str(n) for n in names] if names is not None else None,
        classes=_plain_list(classes) if classes is not None else None,
        has_proba=callable(getattr(obj, "predict_proba", None)),
    )


def inspect(estimator: Any, *, n_features_hint: int | None = None) -> EstimatorInfo:
    """Describe a loaded estimator, decide how serving feeds it, and check it predicts one row.

    A numeric row in a float64 array is tried first; an estimator fitted on a DataFrame that
    refuses it (columns selected by name, string columns encoded) gets a one-row DataFrame
    whose string columns hold a category the estimator knows. Raises InvalidArtifact when
    neither works.
    """
    info = describe(estimator)
    n_features = info.n_features or n_features_hint
    if not n_features:
        return info
    try:
        trial_predict(estimator, n_features)
        return info
    except InvalidArtifact as array_error:
        if info.feature_names is None:
            raise
        types, samples = _feature_types(estimator, info.feature_names)
        try:
            _predict_quietly(estimator, make_frame([samples], info.feature_names, types))
        except Exception:
            raise array_error from None
        return dataclasses.replace(info, input_kind="dataframe", feature_types=types)


def trial_predict(estimator: Any, n_features: int) -> None:
    """Predict one all-zero row the way serving will (a float64 array), so a model that cannot
    serve is refused at upload rather than failing on every request."""
    try:
        _predict_quietly(estimator, np.zeros((1, n_features), dtype=np.float64))
    except Exception as exc:
        raise InvalidArtifact(
            f"the estimator cannot predict from a numeric row of {n_features} features: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def make_frame(rows: list[list[Any]], names: list[str] | tuple[str, ...], types: list[str] | tuple[str, ...]) -> Any:
    """The DataFrame serving hands a "dataframe" estimator: fitted column names, float64 numbers,
    object strings."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(names))
    for name, kind in zip(names, types):
        frame[name] = frame[name].astype(np.float64 if kind == NUMBER else object)
    return frame


def _predict_quietly(estimator: Any, X: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.predict(X)


def _feature_types(estimator: Any, names: list[str]) -> tuple[list[str], list[Any]]:
    """Which features are strings (an encoder fitted on them holds string categories), with a
    known category of each as a sample value; every other feature is a number."""
    types = {name: NUMBER for name in names}
    samples: dict[str, Any] = {name: 0.0 for name in names}
    for columns, encoder in _encoders(estimator, names):
        for column, categories in zip(columns, getattr(encoder, "categories_", [])):
            values = np.asarray(categories)
            if column in types and values.dtype.kind in "OUS" and len(values):
                types[column] = STRING
                samples[column] = str(values[0])
    return [types[n] for n in names], [samples[n] for n in names]


def _encoders(estimator: Any, columns: list[str]) -> Iterator[tuple[list[str], Any]]:
    """(input columns, fitted encoder) pairs found in pipelines, column transformers and unions."""
    if hasattr(estimator, "categories_"):
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
    """Class values as JSON-ready Python scalars."""
    return np.asarray(values).tolist()
