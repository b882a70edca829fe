"""Decision trees, random forests and extra trees as flat arrays, predicted in NumPy: what lets a
forest's nodes be mapped once per host (``serving.mapped``) instead of copied into every worker.

scikit-learn copies a tree's nodes into memory of its own when it unpickles one, so a forest
costs its size again in each worker. Compiled here, every tree's nodes are a slice of a few flat
arrays (children, feature, threshold, missing-value direction, value, cover), written once per
host as ``.npy`` files and mapped back (copy-on-write, no pickle at all); the scikit-learn
estimator is not kept. Predicting walks every tree at once, one level per step, as
scikit-learn's ``apply`` does (input cast to float32, ``x <= threshold`` goes left, NaN where
the node says), and adds the trees' values in the estimators' order, as its ``predict`` does:
the answers are scikit-learn's to the bit. That is checked when a forest is compiled, on rows
drawn from its own thresholds; a forest that differs is served by scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

_CELLS = 1 << 18  # row-tree pairs walked at once (each a few int64s and floats of state)
_TREE_GROUP = 10  # trees walked together by a batch of at least _GROUP_ROWS rows (see apply)
_GROUP_ROWS = 256
ARRAYS = ("left", "right", "feature", "threshold", "missing_left", "value", "cover", "offsets")
_SINGLE = {"DecisionTreeRegressor", "DecisionTreeClassifier", "ExtraTreeRegressor", "ExtraTreeClassifier"}
# A forest is faster compiled than through scikit-learn's predict (one Python call per tree, and a
# thread pool when it was fitted with n_jobs): every version of these is served compiled. A single
# tree is faster through its own predict, and is compiled only to be mapped.
ENSEMBLES = frozenset({"RandomForestRegressor", "RandomForestClassifier", "ExtraTreesRegressor",
                       "ExtraTreesClassifier"})


def _tree_normalizes() -> bool:
    """Whether this scikit-learn's tree ``predict_proba`` divides a leaf's values by their sum.
    Since 1.4 a classifier's leaves hold fractions already, and recent releases return them as
    they are: dividing again moves the last bit where a leaf's fractions add up to 0.9999999999999999.
    (Compiling checks the answers bit for bit anyway: a wrong guess leaves scikit-learn serving.)"""
    import inspect

    from sklearn.tree import DecisionTreeClassifier

    try:
        return "normalizer" in inspect.getsource(DecisionTreeClassifier.predict_proba)
    except (OSError, TypeError):  # no source installed: the recent releases' way
        return False


_TREE_NORMALIZES = _tree_normalizes()


class TreeView(NamedTuple):
    """One tree's nodes, with the attribute names of scikit-learn's ``Tree`` that
    ``serving.treeshap`` reads (views into the flat arrays: nothing is copied)."""

    children_left: np.ndarray
    children_right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    weighted_n_node_samples: np.ndarray


class CompiledForest:
    """A compiled tree or forest of one output: ``predict``, and ``predict_proba`` for a classifier."""

    def __init__(self, kind: str, arrays: dict[str, np.ndarray], classes: np.ndarray | None, n_features: int,
                 max_depth: int) -> None:
        self.kind = kind  # the scikit-learn class it was compiled from
        self.arrays = arrays
        self.classes_ = classes
        self.n_features_in_ = n_features
        self.n_outputs_ = 1
        self.max_depth = max_depth
        self.single = kind in _SINGLE
        self._roots = arrays["offsets"][:-1]

    @classmethod
    def of(cls, estimator: Any) -> CompiledForest | None:
        """The compiled form of a fitted tree or forest of one output (None for anything else)."""
        kind = type(estimator).__name__
        if type(estimator).__module__.split(".")[0] != "sklearn" or kind not in _SINGLE | ENSEMBLES:
            return None
        if getattr(estimator, "n_outputs_", 1) != 1 or not isinstance(getattr(estimator, "n_features_in_", None), int):
            return None
        members = [estimator] if kind in _SINGLE else list(estimator.estimators_)
        trees = [m.tree_ for m in members]
        classes = np.asarray(estimator.classes_) if hasattr(estimator, "classes_") else None
        sizes = [t.node_count for t in trees]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        width = max(t.value.shape[2] for t in trees)
        value = np.zeros((int(offsets[-1]), 1, width), dtype=np.float64)
        for tree, start in zip(trees, offsets[:-1], strict=False):
            value[start:start + tree.node_count, :, :tree.value.shape[2]] = tree.value[:, :1, :]
        arrays = {
            "left": np.concatenate([t.children_left for t in trees]).astype(np.int64),
            "right": np.concatenate([t.children_right for t in trees]).astype(np.int64),
            "feature": np.concatenate([t.feature for t in trees]).astype(np.int64),
            "threshold": np.concatenate([t.threshold for t in trees]).astype(np.float64),
            "missing_left": np.concatenate([_missing_left(t) for t in trees]).astype(np.bool_),
            "value": value,
            "cover": np.concatenate([t.weighted_n_node_samples for t in trees]).astype(np.float64),
            "offsets": offsets,
        }
        return cls(kind, arrays, classes, int(estimator.n_features_in_), max(t.max_depth for t in trees))

    def views(self) -> list[TreeView]:
        """Each tree's nodes, in the estimators' order."""
        a, bounds = self.arrays, self.arrays["offsets"]
        return [TreeView(*(a[k][start:end] for k in ("left", "right", "feature", "threshold", "value", "cover")))
                for start, end in zip(bounds[:-1], bounds[1:], strict=False)]

    def apply(self, X: np.ndarray) -> np.ndarray:
        """The leaf (a global node index) each row reaches in each tree: ``(rows, trees)``.

        Many rows go through the trees :data:`_TREE_GROUP` at a time: every step of the walk
        gathers from the node arrays at random, and a few trees' nodes stay in the CPU's caches
        where a hundred's do not (1,000 rows x 100 trees, ~470k nodes: 53 -> 41 ms here)."""
        x = np.asarray(_dense(X), dtype=np.float32)
        roots = self._roots
        if len(x) < _GROUP_ROWS or len(roots) <= _TREE_GROUP:
            return self._apply(x, roots)
        return np.concatenate([self._apply(x, roots[i:i + _TREE_GROUP]) for i in range(0, len(roots), _TREE_GROUP)],
                              axis=1)

    def _apply(self, x: np.ndarray, roots: np.ndarray) -> np.ndarray:
        """:meth:`apply` through the trees whose roots are ``roots``; each step walks only the
        row-tree pairs not yet at a leaf."""
        a = self.arrays
        rows, width = x.shape
        node = np.tile(roots, rows)
        base = node.copy()  # each pair's tree: children are numbered within their tree
        row = np.repeat(np.arange(rows), len(roots))
        active = np.arange(len(node))
        values_of = x.reshape(-1)
        left_of, right_of, feature_of, threshold_of = a["left"], a["right"], a["feature"], a["threshold"]
        for _ in range(self.max_depth):
            current = node[active]
            left = left_of[current]
            inner = left >= 0
            if not inner.all():
                active, current, left = active[inner], current[inner], left[inner]
                if not len(active):
                    break
            values = values_of[row[active] * width + feature_of[current]]
            go_left = values <= threshold_of[current]
            missing = np.isnan(values)
            if missing.any():
                go_left = np.where(missing, a["missing_left"][current], go_left)
            node[active] = base[active] + np.where(go_left, left, right_of[current])
        return node.reshape(rows, len(roots))

    def _summed(self, X: np.ndarray) -> np.ndarray:
        """Each row's values, added over the trees in their order: ``(rows, classes or 1)``. Rows
        go :data:`_CELLS` row-tree pairs at a time, so a large batch through many trees never
        holds more than a few MiB of walking state."""
        X = _dense(X)
        step = max(1, _CELLS // len(self._roots))
        if len(X) <= step:
            return self._summed_part(X)
        return np.concatenate([self._summed_part(X[i:i + step]) for i in range(0, len(X), step)])

    def _summed_part(self, X: np.ndarray) -> np.ndarray:
        leaf = self.apply(X)
        per_tree = self.arrays["value"][leaf.T][:, :, 0, :]  # (trees, rows, width), the trees outermost
        if self.classes_ is not None:
            per_tree = per_tree[:, :, :len(self.classes_)]
            if not self.single and _TREE_NORMALIZES:  # each tree's probabilities, as its predict_proba makes them
                normalizer = per_tree.sum(axis=2, keepdims=True)
                normalizer[normalizer == 0.0] = 1.0
                per_tree = per_tree / normalizer
        total = per_tree[0].copy()
        for tree in per_tree[1:]:  # one at a time, in order: the sum scikit-learn makes, to the bit
            total += tree
        return np.asarray(total)

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.classes_ is not None:
            scores = self._summed(X) if self.single else self.predict_proba(X)
            return np.asarray(self.classes_.take(np.argmax(scores, axis=1), axis=0))
        out = self._summed(X)[:, 0]
        return out if self.single else np.asarray(out / len(self._roots))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.classes_ is None:
            raise AttributeError("a regressor has no predict_proba")
        summed = self._summed(X)
        if self.single:
            if not _TREE_NORMALIZES:
                return summed
            normalizer = summed.sum(axis=1)[:, np.newaxis]
            normalizer[normalizer == 0.0] = 1.0
            return np.asarray(summed / normalizer)
        return np.asarray(summed / len(self._roots))


def _dense(X: Any) -> Any:
    """A sparse matrix (a pipeline's one-hot columns before its forest) as the dense rows
    scikit-learn's trees read from it; anything else as it is."""
    return X.toarray() if hasattr(X, "toarray") else X


SMALL_BATCH = 1 << 14  # rows x trees below which the compiled walk beats scikit-learn's (100 trees: ~160 rows)


def small_batches(compiled: CompiledForest, predict: Any) -> Any:
    """``compiled.predict`` for small batches (a forest of 100 trees: 0.2-0.3 ms a row against
    scikit-learn's ~4 ms, whose cost is a Python call per tree), ``predict`` (scikit-learn's) for
    large ones, where its compiled walk of each tree wins (1,000 rows: 10-25 ms against 40-65)."""
    trees = len(compiled.arrays["offsets"]) - 1

    def either(X: np.ndarray) -> Any:
        return compiled.predict(X) if len(X) * trees <= SMALL_BATCH else predict(X)

    return either


def _missing_left(tree: Any) -> np.ndarray:
    found = getattr(tree, "missing_go_to_left", None)
    return np.asarray(found) if found is not None else np.zeros(tree.node_count, dtype=np.bool_)


def agrees(compiled: CompiledForest, estimator: Any, rows: Sequence[np.ndarray]) -> bool:
    """Whether the compiled forest answers as ``estimator`` on every batch of ``rows``, to the bit."""
    for X in rows:
        for method in ("predict", "predict_proba") if compiled.classes_ is not None else ("predict",):
            ours, theirs = getattr(compiled, method)(X), np.asarray(getattr(estimator, method)(X))
            if ours.dtype != theirs.dtype or ours.shape != theirs.shape or not np.array_equal(ours, theirs):
                return False
    return True


def probe_rows(compiled: CompiledForest, seed: int = 0) -> list[np.ndarray]:
    """Rows that reach many leaves: each feature's values drawn from the forest's own thresholds
    (a hair below and above each), a row of NaN, and one row alone."""
    rng = np.random.default_rng(seed)
    a = compiled.arrays
    width = compiled.n_features_in_
    columns = []
    for f in range(width):
        cuts = a["threshold"][(a["feature"] == f) & (a["left"] >= 0)]
        cuts = cuts[np.isfinite(cuts) & (np.abs(cuts) < 1e38)]  # a split of missing values has an infinite one
        if not len(cuts):
            cuts = np.zeros(1)
        picked = rng.choice(cuts, size=256)
        columns.append(np.where(rng.random(256) < 0.5, np.nextafter(picked, -np.inf), np.nextafter(picked, np.inf)))
    X = np.column_stack(columns).astype(np.float64)
    return [X, X[:1], np.full((2, width), np.nan)]
