"""Checks of the index arrays scikit-learn's compiled code follows without bounds checks.

A pickle can carry any numbers. A decision tree whose child index points past its node array, a
HistGradientBoosting node whose feature index is past the input's width, a KD-tree whose index
array points past its data, an SVM whose coefficients are fewer than its support vectors, or a
sparse matrix whose index pointers run past its data makes ``predict`` read outside its memory: a crash of the
serving worker at best, only on the inputs that reach the bad node (so a trial predict need not
meet it). After every load the object graph is walked once and every such structure is checked;
a malformed one is refused with :class:`InvalidArtifact` naming it. Vectorised: a 200-tree
forest costs a few milliseconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelyard.registry.errors import InvalidArtifact

_MAX_OBJECTS = 1_000_000  # objects visited in one graph; a model is far smaller


def check(obj: Any) -> None:
    """Walk what was loaded and check every tree structure in it. Raises InvalidArtifact."""
    from scipy import sparse
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.neighbors._ball_tree import BinaryTree32 as BallTree32
    from sklearn.neighbors._ball_tree import BinaryTree64 as BallTree64
    from sklearn.neighbors._kd_tree import BinaryTree32 as KDTree32
    from sklearn.neighbors._kd_tree import BinaryTree64 as KDTree64
    from sklearn.svm._base import BaseLibSVM
    from sklearn.tree._tree import Tree

    binary_trees = (KDTree32, KDTree64, BallTree32, BallTree64)
    seen: set[int] = set()
    stack: list[tuple[Any, Any]] = [(obj, None)]  # (object, the nearest estimator holding it)
    while stack:
        item, owner = stack.pop()
        if id(item) in seen or isinstance(item, (str, bytes, int, float, bool, type(None))):
            continue
        seen.add(id(item))
        if len(seen) > _MAX_OBJECTS:
            raise InvalidArtifact("the model holds more than a million objects")
        if isinstance(item, Tree):
            _check_tree(item, getattr(owner, "n_features_in_", None))
        elif isinstance(item, TreePredictor):
            _check_predictor(item, owner)
        elif isinstance(item, binary_trees):
            _check_binary_tree(item)
        elif sparse.issparse(item):
            _check_sparse(item)
        elif isinstance(item, np.ndarray):
            if item.dtype.hasobject:
                stack.extend((child, owner) for child in item.ravel())
        elif isinstance(item, dict):
            stack.extend((child, owner) for child in item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend((child, owner) for child in item)
        elif hasattr(item, "__dict__") and type(item).__module__.startswith("sklearn."):
            if isinstance(item, BaseLibSVM) and hasattr(item, "support_vectors_"):
                _check_svm(item)
            holder = item if hasattr(item, "n_features_in_") else owner
            stack.extend((child, holder) for child in vars(item).values())


def _refuse(what: str) -> InvalidArtifact:
    return InvalidArtifact(f"the model's {what}; the file was altered or is not a model scikit-learn wrote",
                           errors={"structure": what})


def _check_tree(tree: Any, n_features: int | None) -> None:
    n = int(tree.node_count)
    left, right, feature = tree.children_left, tree.children_right, tree.feature
    if not (len(left) == len(right) == len(feature) == n) or tree.value.shape[0] != n or n < 1:
        raise _refuse("decision tree has node arrays of different lengths")
    leaf = left == -1
    if not np.array_equal(leaf, right == -1):
        raise _refuse("decision tree has a node with one child")
    index = np.arange(n)
    inner = ~leaf
    # Children come after their parent in every tree scikit-learn builds: no index outside the
    # nodes, and no cycle for a traversal to loop in.
    for child in (left[inner], right[inner]):
        if ((child <= index[inner]) | (child >= n)).any():
            raise _refuse("decision tree has a child index outside its nodes")
    width = int(tree.n_features)
    if n_features is not None and width != n_features:
        raise _refuse(f"decision tree takes {width} features, its estimator {n_features}")
    if ((feature[inner] < 0) | (feature[inner] >= width)).any():
        raise _refuse("decision tree splits on a feature index outside its features")


def _check_predictor(predictor: Any, owner: Any) -> None:
    nodes = predictor.nodes
    n = len(nodes)
    if n < 1:
        raise _refuse("HistGradientBoosting tree has no nodes")
    inner = nodes["is_leaf"] == 0
    index = np.arange(n)
    for side in ("left", "right"):
        child = nodes[side][inner].astype(np.int64)
        if ((child <= index[inner]) | (child >= n)).any():
            raise _refuse("HistGradientBoosting tree has a child index outside its nodes")
    n_features = getattr(owner, "n_features_in_", None)
    features = nodes["feature_idx"][inner].astype(np.int64)
    if n_features is None or ((features < 0) | (features >= n_features)).any():
        raise _refuse("HistGradientBoosting tree splits on a feature index outside its features")
    categorical = inner & (nodes["is_categorical"] != 0)
    if categorical.any():
        is_categorical = getattr(owner, "is_categorical_", None)
        bitsets = nodes["bitset_idx"][categorical].astype(np.int64)
        rows = min(len(predictor.raw_left_cat_bitsets), len(predictor.binned_left_cat_bitsets))
        if (is_categorical is None or len(is_categorical) != n_features
                or not np.asarray(is_categorical)[nodes["feature_idx"][categorical]].all()
                or ((bitsets < 0) | (bitsets >= rows)).any()):
            raise _refuse("HistGradientBoosting tree has a categorical split outside its categories")


def _check_binary_tree(tree: Any) -> None:
    data, idx_array, node_data, node_bounds = tree.get_arrays()
    state = tree.__getstate__()
    n_levels, n_nodes = int(state[5]), int(state[6])
    n_samples = data.shape[0] if data.ndim == 2 else -1
    if (data.ndim != 2 or n_nodes != 2**n_levels - 1 or len(node_data) != n_nodes or idx_array.shape != (n_samples,)
            or node_bounds.ndim != 3 or node_bounds.shape[1:] != (n_nodes, data.shape[1])):
        raise _refuse("neighbours tree has arrays of inconsistent sizes")
    if ((idx_array < 0) | (idx_array >= n_samples)).any():
        raise _refuse("neighbours tree has a sample index outside its data")
    start, end = node_data["idx_start"], node_data["idx_end"]
    if ((start < 0) | (start > end) | (end > n_samples)).any():
        raise _refuse("neighbours tree has a node range outside its data")
    inner = np.flatnonzero(node_data["is_leaf"] == 0)
    if (2 * inner + 2 >= n_nodes).any():
        raise _refuse("neighbours tree has an inner node without children")


def _check_svm(svm: Any) -> None:
    """libsvm reads coefficients, intercepts and support vectors by the counts it is given."""
    sv, n_support = svm.support_vectors_, np.asarray(svm._n_support)
    n_sv = sv.shape[0]
    if n_support.ndim != 1 or (n_support < 0).any() or len(svm.support_) != n_sv:
        raise _refuse("SVM has inconsistent support vector counts")
    if svm._impl in ("c_svc", "nu_svc"):
        k = len(n_support)
        pairs = k * (k - 1) // 2
        shapes_ok = (k >= 2 and n_support.sum() == n_sv and svm._dual_coef_.shape == (k - 1, n_sv)
                     and svm._intercept_.shape == (pairs,) and len(svm._probA) in (0, pairs)
                     and len(svm._probB) in (0, pairs))
    else:
        shapes_ok = svm._dual_coef_.shape == (1, n_sv) and svm._intercept_.shape == (1,) and len(svm._probA) <= 1
    width = getattr(svm, "n_features_in_", None)
    if not shapes_ok or (svm.kernel != "precomputed" and sv.ndim == 2 and width is not None and sv.shape[1] != width):
        raise _refuse("SVM has coefficients or intercepts that do not match its support vectors")


def _check_sparse(matrix: Any) -> None:
    """A sparse matrix unpickled is not checked by SciPy; its index arrays must be."""
    try:
        if hasattr(matrix, "check_format"):
            matrix.check_format(full_check=True)
        elif hasattr(matrix, "_check"):
            matrix._check()
    except (ValueError, TypeError, IndexError) as exc:
        raise _refuse(f"sparse matrix is malformed ({exc})") from None
