"""Tree structures whose indices a pickle altered are refused at load, before any predict can
follow them outside their memory (a child index past the node array crashes the process
under a plain load and predict)."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier

from modelyard.registry import safety
from modelyard.registry.errors import InvalidArtifact
from tests.registry import catalogue

X = np.random.RandomState(0).rand(60, 3)
y = (X[:, 0] > 0.5).astype(int)


def _tree_state(model: Any, edit: Callable[[np.ndarray], None], tree: Any = None) -> bytes:
    """The model pickled with its first decision tree's node array edited."""
    tree = tree if tree is not None else model.tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    edit(nodes)
    state["nodes"] = nodes
    tree.__setstate__(state)
    return pickle.dumps(model)


def _set(field: str, index: int, value: int) -> Callable[[np.ndarray], None]:
    def edit(nodes: np.ndarray) -> None:
        nodes[field][index] = value
    return edit


@pytest.mark.parametrize("edit, fragment", [
    (_set("left_child", 0, 10**9), "child index outside its nodes"),
    (_set("right_child", 0, 0), "child index outside its nodes"),  # a cycle back to the root
    (_set("left_child", 0, -1), "a node with one child"),
    (_set("feature", 0, 10**6), "feature index outside its features"),
    (_set("feature", 0, -5), "feature index outside its features"),
], ids=["child-past-end", "cycle", "one-child", "feature-past-end", "negative-feature"])
def test_an_altered_decision_tree_is_refused(edit: Callable[[np.ndarray], None], fragment: str) -> None:
    data = _tree_state(DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y), edit)
    with pytest.raises(InvalidArtifact, match=fragment):
        safety.load(data, "pickle")


def test_an_altered_tree_deep_in_a_forest_is_refused() -> None:
    forest = RandomForestClassifier(n_estimators=4, max_depth=3, random_state=0).fit(X, y)
    data = _tree_state(forest, _set("left_child", 1, 10**9), tree=forest.estimators_[3].tree_)
    with pytest.raises(InvalidArtifact, match="child index outside its nodes"):
        safety.load(data, "joblib")


def _hgb_altered(field: str, value: int) -> bytes:
    model = HistGradientBoostingClassifier(max_iter=3, random_state=0).fit(X, y)
    nodes = model._predictors[0][0].nodes
    nodes[field][0] = value
    return pickle.dumps(model)


@pytest.mark.parametrize("field, value, fragment", [
    ("left", 10**6, "child index outside its nodes"),
    ("right", 0, "child index outside its nodes"),
    ("feature_idx", 10**6, "feature index outside its features"),
    ("is_categorical", 1, "categorical split outside its categories"),
])
def test_an_altered_hist_gradient_boosting_tree_is_refused(field: str, value: int, fragment: str) -> None:
    with pytest.raises(InvalidArtifact, match=fragment):
        safety.load(_hgb_altered(field, value), "pickle")


@pytest.mark.parametrize("position, value, fragment", [
    (1, np.full(60, 10**6), "sample index outside its data"),
    (2, None, "node range outside its data"),
    (6, 99, "arrays of inconsistent sizes"),
], ids=["idx-array", "node-range", "node-count"])
def test_an_altered_neighbours_tree_is_refused(position: int, value: Any, fragment: str) -> None:
    model = KNeighborsClassifier(algorithm="kd_tree", leaf_size=5).fit(X, y)
    state = list(model._tree.__getstate__())
    if position == 2:
        node_data = state[2].copy()
        node_data["idx_end"][0] = 10**6
        state[2] = node_data
    else:
        state[position] = value
    model._tree.__setstate__(tuple(state))
    with pytest.raises(InvalidArtifact, match=fragment):
        safety.load(pickle.dumps(model), "pickle")


def test_an_altered_tree_upload_is_422_and_the_server_keeps_serving(client: FlaskClient) -> None:
    data = _tree_state(DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y), _set("left_child", 0, 10**9))
    response = client.post("/models/t/versions", data={"file": (io.BytesIO(data), "t.pkl")},
                           content_type="multipart/form-data")
    assert response.status_code == 422
    assert response.json["errors"] == {"structure": "decision tree has a child index outside its nodes"}
    assert client.post("/predict", json={"sepal.length": 5.1, "sepal.width": 3.5, "petal.length": 1.4,
                                         "petal.width": 0.2}).json["predictions"] == [0]


def test_every_catalogue_model_passes_the_structure_checks() -> None:
    from modelyard.registry.safety import structure

    for entry in catalogue.entries():
        structure.check(entry.build())


@pytest.mark.parametrize("attribute, value, fragment", [
    ("_dual_coef_", lambda n: np.ones((2, 3)), "coefficients or intercepts"),
    ("_intercept_", lambda n: np.ones(1), "coefficients or intercepts"),
    ("_n_support", lambda n: np.array([-5, 5, n], dtype=np.int32), "support vector counts"),
    ("support_vectors_", lambda n: np.ones((n, 7)), "coefficients or intercepts"),
], ids=["dual-coef", "intercept", "n-support", "width"])
def test_an_altered_svm_is_refused(attribute: str, value: Callable[[int], Any], fragment: str) -> None:
    from sklearn.svm import SVC

    model = SVC().fit(X, np.array([0, 1, 2] * 20))
    setattr(model, attribute, value(model.support_vectors_.shape[0]))
    with pytest.raises(InvalidArtifact, match=fragment):
        safety.load(pickle.dumps(model), "pickle")


def test_a_sparse_matrix_with_indices_past_its_data_is_refused() -> None:
    from scipy import sparse
    from sklearn.svm import SVC

    model = SVC().fit(sparse.csr_matrix(X), y)
    model.support_vectors_.indices[0] = 10**6
    with pytest.raises(InvalidArtifact, match="sparse matrix is malformed"):
        safety.load(pickle.dumps(model), "pickle")
