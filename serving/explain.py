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
from modelyard.serving import treeshap
from modelyard.serving.forest import CompiledForest

EXPLAINABLE = ("decision trees, random forests, extra trees and gradient boosting (exact TreeSHAP); linear models "
               "(LinearRegression, Ridge, Lasso, ElasticNet, LogisticRegression, SGD, linear SVMs of two classes ...) "
               "alone or after column-by-column transformers (scalers, imputers, one-hot and ordinal encoders, "
               "binning, a ColumnTransformer of those), uploaded with a `reference`")
_PER_COLUMN = {"StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "SimpleImputer", "OneHotEncoder",
               "OrdinalEncoder", "KBinsDiscretizer"}
_TOLERANCE = 1e-9
# TreeSHAP here is Python: ~25-55 µs a leaf a row on this machine (a 10-tree depth-6 forest, 637
# leaves: 26 ms a row; 100 trees of depth 8, 21,094 leaves: 0.55 s). A request may visit at most
# this many leaves in all, so an explanation never holds a worker for more than a few seconds.
LEAF_BUDGET = 200_000


class TreeExplainer(NamedTuple):
    """Path-dependent TreeSHAP (``serving.treeshap``) over a tree, a forest or a gradient
    boosting: ``trees`` ``(tree_, weight, output column)``, ``base`` the constant every output
    starts from (a boosting's initial prediction), ``output`` the model's own function explained."""

    features: tuple[str, ...]
    trees: tuple[tuple[Any, float], ...]  # (tree_, weight)
    classes: tuple[Any, ...]
    output: Any  # predict, predict_proba or decision_function
    base: tuple[float, ...]  # per output column (one for a regressor)
    proba: bool  # a classifier tree's leaves hold class fractions (normalised per node)

    def __call__(self, X: Any, predicted: Any) -> list[dict[str, Any]]:
        leaves = sum(int((tree.children_left == -1).sum()) for tree, _ in self.trees)
        if leaves * len(X) > LEAF_BUDGET:
            raise InvalidInput(f"explaining {len(X)} rows of a model of {leaves:,} leaves visits more than "
                               f"{LEAF_BUDGET:,} leaves (a few seconds of this server's time): send fewer rows",
                               errors={"rows": len(X), "leaves": leaves})
        rows = np.asarray(X.to_numpy(dtype=np.float64) if hasattr(X, "iloc") else X, dtype=np.float64)
        outputs = np.asarray(self.output(X), dtype=np.float64)
        explained = []
        for j, x in enumerate(rows):
            column = 0 if outputs.ndim == 1 else (
                self.classes.index(np.asarray(predicted)[j].item()) if outputs.shape[1] > 1 else 0)
            phi = np.zeros(len(self.features))
            base = self.base[min(column, len(self.base) - 1)]
            for tree, weight in self.trees:
                values = _node_values(tree, column, self.proba)
                phi += weight * treeshap.tree_values(tree, values, x, len(self.features))
                base += weight * treeshap.expected_value(tree, values)
            output = float(outputs[j] if outputs.ndim == 1 else outputs[j, column])
            explained.append(_checked(j, float(base), dict(zip(self.features, phi.tolist())), output,
                                      self.classes, column if outputs.ndim == 2 else None))
        return explained


def _node_values(tree: Any, column: int, proba: bool) -> np.ndarray:
    value = tree.value[:, 0, :]
    if proba:
        return np.asarray(value[:, column] / value.sum(axis=1), dtype=np.float64)
    return np.asarray(value[:, min(column, value.shape[1] - 1)], dtype=np.float64)


def _checked(j: int, base: float, contributions: dict[str, float], output: float, classes: tuple[Any, ...],
             column: int | None) -> dict[str, Any]:
    """One row's explanation, refused unless base + contributions is the model's output."""
    total = base + math.fsum(contributions.values())
    if not math.isclose(total, output, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE * max(1.0, abs(output))):
        raise InvalidInput(f"row {j}'s explanation does not add up ({total!r} against the model's {output!r}); "
                           "explainable: " + EXPLAINABLE)
    item: dict[str, Any] = {"base_value": base, "contributions": contributions, "output": output}
    if classes:
        item["class"] = classes[-1] if column is None else classes[column]
    return item


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
            explained.append(_checked(j, base, contributions, output, self.classes, column))
        return explained


def explainer_for(estimator: Any, features: Sequence[str],
                  profile: dict[str, Any] | None) -> Explainer | TreeExplainer | _PerClassBoosting | str:
    """The version's explainer, or why it has none. Called when a version is loaded: whatever
    an estimator's structure holds, this never raises (a version that cannot be explained still
    serves)."""
    try:
        return _explainer(estimator, features, profile)
    except Exception as error:  # noqa: BLE001 - an estimator this reading did not foresee
        return f"its structure could not be read ({type(error).__name__}: {error})"


def explainability(estimator: Any, features: Sequence[str], profile: dict[str, Any] | None) -> str | None:
    """Why a version cannot be explained (None: it can): what its upload's trial records, so that
    its detail says it before any server loads it. The app hands it to the sandbox (the registry
    knows no serving), where the uploaded estimator is loaded."""
    found = explainer_for(estimator, features, profile)
    return found if isinstance(found, str) else None


def _explainer(estimator: Any, features: Sequence[str],
               profile: dict[str, Any] | None) -> Explainer | TreeExplainer | _PerClassBoosting | str:
    classes_ = getattr(estimator, "classes_", None)
    if isinstance(classes_, list) or getattr(estimator, "n_outputs_", 1) != 1:
        return "a model of several outputs"
    trees = _trees(estimator, features)
    if trees is not None:
        return trees
    final, before = _split(estimator)
    if not hasattr(final, "coef_") or not all(_per_column(step) for step in before):
        name = getattr(final, "kind", type(final).__name__)  # a compiled forest (serving.mapped) by its own name
        return f"a {name} after {', '.join(type(s).__name__ for s in before) or 'nothing'} is not " \
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


_TREES = {"DecisionTreeRegressor", "DecisionTreeClassifier", "ExtraTreeRegressor", "ExtraTreeClassifier"}
_FORESTS = {"RandomForestRegressor", "RandomForestClassifier", "ExtraTreesRegressor", "ExtraTreesClassifier"}
_BOOSTING = {"GradientBoostingRegressor", "GradientBoostingClassifier"}


def _trees(estimator: Any, features: Sequence[str]) -> TreeExplainer | _PerClassBoosting | str | None:
    """A tree model's explainer (None: not a tree model; a reason: one that cannot be)."""
    kind = type(estimator).__name__
    classes = tuple(np.asarray(getattr(estimator, "classes_", None) if getattr(estimator, "classes_", None)
                               is not None else ()).tolist())
    if isinstance(estimator, CompiledForest):  # the same trees, as views of the mapped arrays
        views = estimator.views()
        output = estimator.predict_proba if classes else estimator.predict
        return TreeExplainer(tuple(features), tuple((view, 1.0 / len(views)) for view in views), classes, output,
                             (0.0,), bool(classes))
    if kind in _TREES or kind in _FORESTS:
        members = [estimator] if kind in _TREES else list(estimator.estimators_)
        if getattr(estimator, "n_outputs_", 1) != 1:
            return "a tree model of several outputs"
        output = estimator.predict_proba if classes else estimator.predict
        return TreeExplainer(tuple(features), tuple((m.tree_, 1.0 / len(members)) for m in members), classes, output,
                             (0.0,), bool(classes))
    if kind in _BOOSTING:
        if estimator.init not in (None, "zero"):
            return "a gradient boosting started from a custom init estimator"
        rate = float(estimator.learning_rate)
        start = np.asarray(estimator._raw_predict_init(np.zeros((1, len(features)))), dtype=np.float64)[0]
        stages = estimator.estimators_
        if classes and stages.shape[1] > 1:  # multiclass: one tree per class per stage, explained per class
            return _PerClassBoosting(tuple(features), stages, rate, tuple(start.tolist()), classes,
                                     estimator.decision_function)
        trees = tuple((stage[0].tree_, rate) for stage in stages)
        output = estimator.decision_function if classes else estimator.predict
        return TreeExplainer(tuple(features), trees, classes, output, (float(start[0]),), False)
    return None


class _PerClassBoosting(NamedTuple):
    features: tuple[str, ...]
    stages: Any
    rate: float
    start: tuple[float, ...]
    classes: tuple[Any, ...]
    output: Any

    def __call__(self, X: Any, predicted: Any) -> list[dict[str, Any]]:
        explained = []
        for j, label in enumerate(np.asarray(predicted).tolist()):
            k = self.classes.index(label)
            one = TreeExplainer(self.features, tuple((stage[k].tree_, self.rate) for stage in self.stages), (),
                                lambda rows, k=k: np.asarray(self.output(rows))[:, k], (self.start[k],), False)
            item = one(X.iloc[j:j + 1] if hasattr(X, "iloc") else X[j:j + 1], predicted[j:j + 1])[0]
            explained.append({**item, "class": label})
        return explained


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
