"""A version's reference profile: what its training (or validation) data looked like, per feature,
in **fixed bins** computed once at upload, so that live traffic counted into the same bins on any
number of servers adds up and compares with it (drift), and no window ever recomputes its edges.

- A number feature: the decile edges of the reference (duplicates merged: a discrete feature has
  fewer bins), an underflow and an overflow bin for what falls outside them, the count in each
  bin, mean, standard deviation and missing rate. :func:`bin_of` is the one rule that places a
  value, for the reference and for live rows alike.
- A string feature: the counts of its top ``max_categories`` categories, the rest as ``other``,
  and the missing rate.

The raw reference is not kept: the profile is all that is stored.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelyard.registry.errors import InvalidInput
from modelyard.registry.introspect import NUMBER, STRING, make_frame

DECILES = np.linspace(0.0, 1.0, 11)
OTHER = "other"


def bin_of(edges: Sequence[float], value: float) -> int:
    """The bin of ``value`` among a profile's ``edges``: 0 is the underflow (below the first
    edge), then one bin per pair of edges (the last includes its upper edge; a single edge is one
    bin), and the last is the overflow (above the last edge)."""
    if value < edges[0]:
        return 0
    if value > edges[-1]:
        return max(1, len(edges) - 1) + 1
    return bisect.bisect_right(edges, value, 1, max(1, len(edges) - 1))


def build(reference: Any, features: Sequence[str], kinds: Sequence[str], *, aliases: Mapping[str, str] | None = None,
          max_rows: int, max_categories: int) -> dict[str, Any]:
    """The profile of ``reference`` (rows in feature order, or records by feature name or alias):
    ``{"rows": n, "features": {name: profile}}``. Raises InvalidInput (422) naming the row and
    feature that does not fit, or for more than ``max_rows`` rows."""
    rows = _rows(reference, list(features), dict(aliases or {}))
    if len(rows) > max_rows:
        raise InvalidInput(f"the reference has {len(rows):,} rows; at most {max_rows:,} ([observe] "
                           "reference_max_rows): send a sample", errors={"reference": {"rows": len(rows)}})
    profiles = {}
    for column, (name, kind) in enumerate(zip(features, kinds)):
        values = [row[column] for row in rows]
        profiles[name] = _strings(name, values, max_categories) if kind == STRING else _numbers(name, values)
    return {"rows": len(rows), "features": profiles}


def of_reference(estimator: Any, info: Any, reference: Any, *, names: Sequence[str] | None,
                 aliases: Mapping[str, str], max_rows: int, max_categories: int) -> dict[str, Any]:
    """The upload reference's profile, per feature as the model reads it (numbers, or a
    DataFrame's typed columns), with the profile of what the estimator predicts for it
    (``predictions``, when it can say). Runs in the upload's sandboxed trial: the reference is the
    uploader's bytes too. Raises InvalidInput naming what does not fit."""
    if info.input_kind == "text":
        raise InvalidInput("a reference profiles tabular features; this model reads texts",
                           errors={"reference": "text model"})
    features = list(names or info.feature_names or [f"x{i}" for i in range(info.n_features or 0)])
    kinds = list(info.feature_types or []) if info.input_kind == "dataframe" else [NUMBER] * len(features)
    built = build(reference, features, kinds, aliases=aliases, max_rows=max_rows, max_categories=max_categories)
    predicted = of_predictions(estimator, info, reference, names=features, aliases=aliases,
                               max_categories=max_categories)
    if predicted is not None:
        built["predictions"] = predicted
    return built


def of_predictions(estimator: Any, info: Any, reference: Any, *, names: Sequence[str] | None,
                   aliases: Mapping[str, str], max_categories: int) -> dict[str, Any] | None:
    """The profile of what ``estimator`` predicts for the reference rows (in the upload's trial,
    where the estimator is loaded): a classifier's predicted classes as categories (their
    ``str``), a regressor's outputs in decile bins. None when it cannot say (a text model, several
    outputs, rows that do not fit or that the estimator refuses): the upload's own reading of the
    reference reports what is wrong with it."""
    if info.input_kind == "text" or not info.n_features:
        return None
    features = list(names or info.feature_names or [f"x{i}" for i in range(info.n_features)])
    try:
        rows = _rows(reference, features, dict(aliases))
        if info.input_kind == "dataframe":
            X = make_frame(rows, features, info.feature_types)
        else:
            X = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
        predicted = np.asarray(estimator.predict(X))
    except Exception:  # noqa: BLE001 - see the docstring
        return None
    if predicted.ndim != 1:
        return None
    if info.classes is not None:
        return _strings("prediction", [str(v) for v in predicted.tolist()], max_categories)
    if predicted.dtype.kind not in "iuf":
        return None
    return _numbers("prediction", [float(v) for v in predicted.tolist()])


def _numbers(name: str, values: list[Any]) -> dict[str, Any]:
    present = []
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isinf(value):
            raise InvalidInput(f"reference row {i}: feature {name!r} is a number feature, got {value!r}",
                               errors={"reference": {"row": i, "feature": name}})
        present.append(float(value))
    missing = (len(values) - len(present)) / len(values)
    if not present:
        return {"kind": NUMBER, "edges": [], "counts": [], "mean": None, "std": None, "missing": missing}
    array = np.asarray(present)
    # Deciles that are values of the reference (never interpolated between two of them): a
    # discrete feature gets one bin per run of its values, not bins between them.
    edges = [float(e) for e in np.unique(np.quantile(array, DECILES, method="inverted_cdf"))]
    counts = [0] * (max(1, len(edges) - 1) + 2)
    for value in present:
        counts[bin_of(edges, value)] += 1
    return {"kind": NUMBER, "edges": edges, "counts": counts, "mean": float(array.mean()),
            "std": float(array.std()), "missing": missing}


def _strings(name: str, values: list[Any], max_categories: int) -> dict[str, Any]:
    seen: Counter[str] = Counter()
    missing = 0
    for i, value in enumerate(values):
        if value is None:
            missing += 1
        elif isinstance(value, str):
            seen[value] += 1
        else:
            raise InvalidInput(f"reference row {i}: feature {name!r} is a string feature, got {value!r}",
                               errors={"reference": {"row": i, "feature": name}})
    top = sorted(seen.items(), key=lambda item: (-item[1], item[0]))[:max_categories]
    kept = dict(top)
    return {"kind": STRING, "counts": kept, OTHER: sum(seen.values()) - sum(kept.values()),
            "missing": missing / len(values)}


def _rows(reference: Any, features: list[str], aliases: dict[str, str]) -> list[list[Any]]:
    """The reference as rows in feature order: records (by name or alias) or rows, or a CSV's
    ``{"columns", "data"}``."""
    if isinstance(reference, Mapping) and set(reference) == {"columns", "data"}:
        columns = [aliases.get(str(c), str(c)) for c in reference["columns"]]
        reference = [dict(zip(columns, row)) for row in reference["data"]]
    if not isinstance(reference, list) or not reference:
        raise InvalidInput("the reference must be a non-empty JSON list of rows or records, or a CSV with a header",
                           errors={"reference": "shape"})
    rows = []
    for i, item in enumerate(reference):
        if isinstance(item, Mapping):
            record = {aliases.get(str(k), str(k)): v for k, v in item.items()}
            unknown = sorted(set(record) - set(features))
            missing = [f for f in features if f not in record]
            if unknown or missing:
                raise InvalidInput(f"reference row {i} does not fit the model's features: "
                                   f"unknown {unknown}, missing {missing}",
                                   errors={"reference": {"row": i, "unknown": unknown, "missing": missing}})
            rows.append([record[f] for f in features])
        elif isinstance(item, list) and len(item) == len(features):
            rows.append(item)
        else:
            raise InvalidInput(f"reference row {i} must be a record or a row of {len(features)} values",
                               errors={"reference": {"row": i}})
    return rows
