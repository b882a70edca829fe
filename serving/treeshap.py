"""Path-dependent TreeSHAP (Lundberg, Erion and Lee, "Consistent Individualized Feature Attribution
for Tree Ensembles", 2018, Algorithm 2): the exact Shapley values of one tree's output for one row,
the absent features' effect taken from the training samples that reached each node, in
O(leaves x depth^2). Sums over a forest's or a boosting's trees with their weights. Base value +
the values equal the tree's output exactly (what ``serving.explain`` checks on every call).

Written here so that serving needs no ``shap`` (its test suite compares with ``shap`` instead).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class _Path:
    """The features met on the way down: feature, zero fraction, one fraction, weight."""

    __slots__ = ("d", "z", "o", "w")

    def __init__(self) -> None:
        self.d: list[int] = []
        self.z: list[float] = []
        self.o: list[float] = []
        self.w: list[float] = []

    def copy(self) -> _Path:
        other = _Path()
        other.d, other.z, other.o, other.w = self.d[:], self.z[:], self.o[:], self.w[:]
        return other

    def extend(self, pz: float, po: float, pi: int) -> None:
        depth = len(self.d)
        self.d.append(pi)
        self.z.append(pz)
        self.o.append(po)
        self.w.append(1.0 if depth == 0 else 0.0)
        w = self.w
        for i in range(depth - 1, -1, -1):
            w[i + 1] += po * w[i] * (i + 1) / (depth + 1)
            w[i] = pz * w[i] * (depth - i) / (depth + 1)

    def unwind(self, i: int) -> None:
        depth = len(self.d) - 1
        w, o, z = self.w, self.o[i], self.z[i]
        n = w[depth]
        for j in range(depth - 1, -1, -1):
            if o != 0:
                t = w[j]
                w[j] = n * (depth + 1) / ((j + 1) * o)
                n = t - w[j] * z * (depth - j) / (depth + 1)
            else:
                w[j] = w[j] * (depth + 1) / (z * (depth - j))
        for seq in (self.d, self.z, self.o):
            del seq[i]
        del w[depth]

    def unwound_sum(self, i: int) -> float:
        """The sum of the weights had the path not met its ``i``-th feature."""
        depth = len(self.d) - 1
        w, o, z = self.w, self.o[i], self.z[i]
        total = 0.0
        n = w[depth]
        for j in range(depth - 1, -1, -1):
            if o != 0:
                t = n * (depth + 1) / ((j + 1) * o)
                total += t
                n = w[j] - t * z * (depth - j) / (depth + 1)
            else:
                total += w[j] / (z * (depth - j) / (depth + 1))
        return total


def tree_values(tree: Any, values: np.ndarray, x: np.ndarray, n_features: int) -> np.ndarray:
    """The Shapley values of one sklearn ``tree_`` for row ``x``, its node outputs being ``values``."""
    left, right = tree.children_left, tree.children_right
    feature, threshold, cover = tree.feature, tree.threshold, tree.weighted_n_node_samples
    missing_left = getattr(tree, "missing_go_to_left", None)
    phi = np.zeros(n_features)

    def recurse(node: int, path: _Path, pz: float, po: float, pi: int) -> None:
        path = path.copy()
        path.extend(pz, po, pi)
        if left[node] == -1:
            for i in range(1, len(path.d)):
                phi[path.d[i]] += path.unwound_sum(i) * (path.o[i] - path.z[i]) * values[node]
            return
        split = feature[node]
        value = x[split]
        if value != value and missing_left is not None:  # NaN: the side the tree sent missing values to
            goes_left = bool(missing_left[node])
        else:
            goes_left = value <= threshold[node]
        hot, cold = (left[node], right[node]) if goes_left else (right[node], left[node])
        iz = io = 1.0
        if split in path.d[1:]:
            k = path.d.index(split, 1)
            iz, io = path.z[k], path.o[k]
            path.unwind(k)
        recurse(hot, path, iz * cover[hot] / cover[node], io, split)
        recurse(cold, path, iz * cover[cold] / cover[node], 0.0, split)

    recurse(0, _Path(), 1.0, 1.0, -1)
    return phi


def expected_value(tree: Any, values: np.ndarray) -> float:
    """The tree's output averaged over its training samples (the base value)."""
    leaves = tree.children_left == -1
    cover = tree.weighted_n_node_samples
    return float(np.sum(values[leaves] * cover[leaves]) / cover[0])
