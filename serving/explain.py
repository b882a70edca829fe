"""Explanations (``?explain=true``) that add up exactly: per row, a ``base_value`` and each
feature's ``contributions``, with base_value + sum(contributions) equal to the model's output for
that row (a regressor's prediction; a classifier's decision function, e.g. log-odds, for the class
it explains), checked on every call.

This slice explains **additive** models: a linear model alone, or after transformers that work
column by column (scalers, imputers, one-hot and ordinal encoders, binning, a ColumnTransformer of
those). Such a model is ``f(x) = b + sum_i g_i(x_i)``, so with ``r`` the reference point (each
number feature's reference mean, each string feature's most frequent category, from the version's
upload profile) the contribution of feature i is ``f(x) - f(x with x_i := r_i)`` =
``g_i(x_i) - g_i(r_i)``, and ``base_value = f(r)``: for a linear model on raw columns that is
``coef_i * (x_i - mean_i)``, and for encoded columns it is summed back to the column the caller
sent. One estimator call on ``rows x (features + 1) + 1`` rows computes it all. A model whose
answer would not add up (it is not additive after all) is refused, never approximated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from modelyard.registry.errors import InvalidInput

EXPLAINABLE = ("linear models (LinearRegression, Ridge, Lasso, ElasticNet, LogisticRegression, SGD, linear SVMs of two "
               "classes ...) alone or after column-by-column transformers (scalers, imputers, one-hot and ordinal "
               "encoders, binning, a ColumnTransformer of those), uploaded with a `reference`")
_PER_COLUMN = {"StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "SimpleImputer", "OneHotEncoder",
               "OrdinalEncoder", "KBinsDiscretizer"}
_TOLERANCE = 1e-9


class Explainer(NamedTuple):
    features: tuple[str, ...]
    reference: tuple[Any, ...]  # the reference point, a value per feature
    classes: tuple[Any, ...]  # a classifier's classes_ (empty: a regressor)
    output: Any  # the function explained: predict, or decision_function

    def __call__(self, X: Any, predicted: Any) -> list[dict[str, Any]]:
        n, k = len(X), len(self.features)
        scores = np.asarray(self.output(_perturbed(X, self.reference, k)), dtype=np.float64)
        per_row = scores[:-1].reshape(n, k + 1, *scores.shape[1:])
        base_all = scores[-1]
        explained = []
        for j in range(n):
            row = per_row[j]
            column = None
            if row.ndim == 2:  # one score per class: the predicted class's
                column = self.classes.index(np.asarray(predicted)[j].item())
                row = row[:, column]
            base = float(base_all if column is None else base_all[column])
            output = float(row[0])
            contributions = {f: output - float(row[1 + i]) for i, f in enumerate(self.features)}
            total = base + math.fsum(contributions.values())
            if not math.isclose(total, output, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE * max(1.0, abs(output))):
                raise InvalidInput(f"row {j}'s explanation does not add up ({total!r} against the model's {output!r}): "
                                   "this model is not additive; explainable: " + EXPLAINABLE)
            item: dict[str, Any] = {"base_value": base, "contributions": contributions, "output": output}
            if self.classes:
                item["class"] = self.classes[-1] if column is None else self.classes[column]
            explained.append(item)
        return explained


def explainer_for(estimator: Any, features: Sequence[str], profile: dict[str, Any] | None) -> Explainer | str:
    """The version's explainer, or why it has none."""
    final, before = _split(estimator)
    if not hasattr(final, "coef_") or not all(_per_column(step) for step in before):
        return f"a {type(final).__name__} after {', '.join(type(s).__name__ for s in before) or 'nothing'} is not " \
               "additive"
    classes = tuple(np.asarray(getattr(estimator, "classes_", ())).tolist())
    if type(final).__name__ in ("SVC", "NuSVC") and len(classes) > 2:
        return "a multiclass SVC's decision function is voted, not additive"
    if classes and not hasattr(estimator, "decision_function"):
        return f"a {type(final).__name__} has no decision function"
    if np.ndim(final.coef_) == 2 and not classes and np.shape(final.coef_)[0] > 1:
        return "a regressor of several outputs"
    if not profile:
        return "it was uploaded without a `reference`, the point explanations are measured from"
    point = []
    for name in features:
        kept = profile["features"].get(name) or {}
        value = kept.get("mean") if kept.get("kind") == "number" else next(iter(kept.get("counts") or {}), None)
        if value is None:
            return f"its reference has no value for feature {name!r}"
        point.append(value)
    output = estimator.decision_function if classes else estimator.predict
    return Explainer(tuple(features), tuple(point), classes, output)


def _split(estimator: Any) -> tuple[Any, list[Any]]:
    steps = getattr(estimator, "steps", None)
    if steps is None:
        return estimator, []
    return steps[-1][1], [step for _, step in steps[:-1]]


def _per_column(step: Any) -> bool:
    if step is None or step == "passthrough":
        return True
    if type(step).__name__ == "ColumnTransformer":
        parts = [t for _, t, _ in step.transformers_ if t not in ("drop", "passthrough")]
        return all(_per_column(t) for t in parts)
    if hasattr(step, "steps"):
        return all(_per_column(s) for _, s in step.steps)
    return type(step).__name__ in _PER_COLUMN


def _perturbed(X: Any, reference: Sequence[Any], k: int) -> Any:
    """Each row, then it with each feature in turn set to the reference, then the reference alone."""
    n = len(X)
    if hasattr(X, "iloc"):  # a DataFrame (typed columns)
        import pandas as pd

        frame = X.iloc[np.repeat(np.arange(n), k + 1)].reset_index(drop=True)
        for i in range(k):
            frame.iloc[np.arange(n) * (k + 1) + 1 + i, i] = reference[i]
        point = pd.DataFrame([list(reference)], columns=X.columns).astype(X.dtypes.to_dict())
        return pd.concat([frame, point], ignore_index=True)
    cube = np.repeat(np.asarray(X, dtype=np.float64)[:, None, :], k + 1, axis=1)
    cube[:, np.arange(1, k + 1), np.arange(k)] = np.asarray(reference, dtype=np.float64)
    return np.vstack([cube.reshape(n * (k + 1), k), np.asarray([reference], dtype=np.float64)])
