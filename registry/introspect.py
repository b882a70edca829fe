"""What the registry records about a loaded estimator: its class, inputs, classes and methods."""

from __future__ import annotations

import platform
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from registry.errors import InvalidArtifact


@dataclass(frozen=True)
class EstimatorInfo:
    estimator: str
    n_features: int | None
    feature_names: list[str] | None
    classes: list[Any] | None
    has_proba: bool


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
    """Describe a loaded estimator and check it predicts one numeric row (when its number of
    features is known, from the estimator or the uploader)."""
    info = describe(estimator)
    n_features = info.n_features or n_features_hint
    if n_features:
        trial_predict(estimator, n_features)
    return info


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


def trial_predict(estimator: Any, n_features: int) -> None:
    """Predict one all-zero row the way serving will (a float64 array), so a model that cannot
    serve is refused at upload rather than failing on every request."""
    row = np.zeros((1, n_features), dtype=np.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.predict(row)
    except Exception as exc:
        raise InvalidArtifact(
            f"the estimator cannot predict from a numeric row of {n_features} features: "
            f"{type(exc).__name__}: {exc}"
        ) from None
