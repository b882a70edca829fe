"""serving.forest: a compiled tree or forest answers as scikit-learn does, to the bit, on batches
small and large (large ones walk the trees a group at a time), with missing values too."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor
from sklearn.tree import DecisionTreeClassifier

from modelyard.serving.forest import _GROUP_ROWS, _TREE_GROUP, CompiledForest

_RNG = np.random.default_rng(11)
_X = _RNG.standard_normal((600, 6))
_X[::9, 2] = np.nan  # scikit-learn's forests learn where missing values go
_Y = (np.nan_to_num(_X[:, 0]) + _X[:, 1] > 0).astype(int) + (_X[:, 3] > 1)


@pytest.mark.parametrize("estimator", [
    RandomForestClassifier(n_estimators=2 * _TREE_GROUP + 3, random_state=0),
    RandomForestRegressor(n_estimators=2 * _TREE_GROUP + 3, random_state=0),
    ExtraTreesClassifier(n_estimators=_TREE_GROUP + 1, random_state=0),
    ExtraTreesRegressor(n_estimators=_TREE_GROUP - 1, random_state=0),
    DecisionTreeClassifier(random_state=0),
], ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("rows", [1, _GROUP_ROWS - 1, _GROUP_ROWS, 1_000])
def test_compiled_answers_are_scikit_learns(estimator: Any, rows: int) -> None:
    target = _Y if hasattr(estimator, "predict_proba") else _Y + _RNG.standard_normal(len(_Y))
    estimator.fit(_X if "Extra" not in type(estimator).__name__ else np.nan_to_num(_X), target)
    compiled = CompiledForest.of(estimator)
    assert compiled is not None
    X = _RNG.standard_normal((rows, 6)) * 1.5
    if "Extra" not in type(estimator).__name__:
        X[::5, 2] = np.nan
    leaves = estimator.apply(X).reshape(rows, -1)  # each tree's own node numbers; compiled: global ones
    assert np.array_equal(compiled.apply(X), leaves + compiled.arrays["offsets"][:-1])
    assert np.array_equal(compiled.predict(X), estimator.predict(X))
    if hasattr(estimator, "predict_proba"):
        assert np.array_equal(compiled.predict_proba(X), estimator.predict_proba(X))


def test_a_sparse_input_is_read_as_scikit_learn_reads_it() -> None:
    """A pipeline's one-hot step can hand its forest a sparse matrix (serving.mapped.ForestPipeline).
    On these 0/1 features some leaves' class fractions add up to 0.9999999999999999: scikit-learn's
    probabilities are those fractions as they are, not divided by their sum again."""
    from scipy import sparse

    X = (_RNG.random((300, 6)) > 0.7).astype(float)
    forest = RandomForestClassifier(n_estimators=_TREE_GROUP + 2, random_state=0).fit(X, _Y[:300])
    compiled = CompiledForest.of(forest)
    assert compiled is not None
    assert np.array_equal(compiled.predict_proba(X), forest.predict_proba(X))
    rows = sparse.csr_matrix(X)
    assert np.array_equal(compiled.predict(rows), forest.predict(rows))
    assert np.array_equal(compiled.predict_proba(rows), forest.predict_proba(rows))
