"""Request body (already JSON-decoded) -> float64 NumPy array in the version's feature order.

Accepted shapes: one record ``{"feature": value, ...}``; a list of records or of rows;
``{"instances": [...]}`` (rows or records); ``{"inputs": [...]}``; ``{"dataframe_records": [...]}``;
``{"dataframe_split": {"columns": [...], "data": [[...]]}}``, also bare (pandas'
``to_json(orient="split")``, whose ``index`` is ignored). Records are matched to feature
names and the version's feature aliases. Every problem is an :class:`InvalidInput` naming it.
No pandas and no schema library here: this runs on every request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import orjson

from modelyard.registry.errors import InvalidInput, TooLarge
from modelyard.registry.introspect import NUMBER, make_frame
from modelyard.serving.rows import Rows

Matrix = Any  # what an estimator is handed: a 2-D float64 array; for a text model, a list of str
_WRAPPERS = ("instances", "inputs", "dataframe_records")

@dataclass(frozen=True)
class FeatureSpec:
    """A version's input columns: their names and every name (or alias) a record may use."""

    names: tuple[str, ...]
    column_of: Mapping[str, int]
    # None: every feature is a number and the estimator takes a float64 array (the fast path).
    # Otherwise "number" or "string" per feature, and the estimator takes a DataFrame (or, for
    # a text model, a list of strings).
    types: tuple[str, ...] | None = None
    allow_nan: bool = False  # null is a missing value, sent as NaN
    text: bool = False  # one string per row; the estimator takes a list of strings
    # The names, when a record that holds exactly them (no alias) can be read in order at once:
    # every feature a number
    plain: frozenset[str] | None = None
    # With ``plain``: a record's values in column order, taken by the names
    in_order: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = field(default=None, compare=False, repr=False)
    # With ``plain``: the keys of records already read whole (names or aliases, in the record's
    # order) -> their values taken in column order, so the next record with those keys is read at once
    orders: dict[tuple[str, ...], Callable[[Mapping[str, Any]], tuple[Any, ...]]] = field(
        default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(
        cls, names: Sequence[str], aliases: Mapping[str, str] | None = None, types: Sequence[str] | None = None,
        *, allow_nan: bool = False, text: bool = False,
    ) -> FeatureSpec:
        column_of = {name: i for i, name in enumerate(names)}
        for alias, target in (aliases or {}).items():
            column_of.setdefault(alias, column_of[target])
        if text:
            types = ("string",) * len(names)
        plain = frozenset(names) if types is None and len(set(names)) == len(names) else None
        return cls(tuple(names), column_of, tuple(types) if types is not None else None, allow_nan, text, plain,
                   _values_of(tuple(names)) if plain is not None else None)


def _values_of(keys: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A record's values under ``keys``, in that order, as a tuple (one C call)."""
    if len(keys) == 1:
        key = keys[0]
        return lambda record: (record[key],)
    return itemgetter(*keys)


def is_one_record(body: Any) -> bool:
    """A JSON object that is one record (no wrapper key): :func:`decode` reads its values one by
    one, never as a whole through NumPy, so ``may_hold_booleans`` does not matter to it."""
    return isinstance(body, dict) and _SPECIAL_KEYS.isdisjoint(body)


class Decoded(NamedTuple):
    X: Any  # a float64 ndarray, or a DataFrame for versions that take one
    single_record: bool  # the body was one bare record (the tutorial's shape)


def decode(body: Any, spec: FeatureSpec, *, max_rows: int, may_hold_booleans: bool = True) -> Decoded:
    """Turn a decoded JSON body (or :class:`Rows` already read) into an ``(n_rows, n_features)``
    float64 array.

    ``may_hold_booleans`` False (the raw body has no ``true``/``false``) lets rows of numbers
    be converted by NumPy in one call instead of being checked value by value.
    """
    if isinstance(body, Rows):
        fits = (spec.types is None and body.X.shape[1] == len(spec.names) and len(body.X) <= max_rows
                and (body.wrapper is None or body.wrapper not in spec.column_of))
        if fits:
            return Decoded(body.X, False)
        body = orjson.loads(body.raw)  # valid JSON (simdjson read it); the general path names what does not fit
    if isinstance(body, dict):
        if _SPECIAL_KEYS.isdisjoint(body):  # one record (is_one_record), the tutorial's shape
            if spec.plain is not None:
                return Decoded(_one_record(body, spec), True)
            return Decoded(_rows_to_array([_record_to_row(body, spec, 0)], spec), True)
        if "dataframe_split" in body and len(body) == 1:
            return Decoded(_from_split(body["dataframe_split"], spec, max_rows), False)
        if _is_bare_split(body, spec):  # pandas' DataFrame.to_json(orient="split") as it comes
            return Decoded(_from_split(body, spec, max_rows), False)
        for key in _WRAPPERS:
            if key in body and len(body) == 1 and key not in spec.column_of:
                return Decoded(_from_items(body[key], spec, max_rows, where=key, fast=not may_hold_booleans), False)
        return Decoded(_rows_to_array([_record_to_row(body, spec, 0)], spec), True)
    if isinstance(body, list):
        return Decoded(_from_items(body, spec, max_rows, where="body", fast=not may_hold_booleans), False)
    raise InvalidInput(
        "the body must be a JSON object (one record, or instances/inputs/dataframe_split) "
        "or a list of records or rows"
    )


# The keys that can make an object something other than one record (see decode)
_SPECIAL_KEYS = frozenset({"dataframe_split", "columns", "data", *_WRAPPERS})


def _is_bare_split(body: dict[str, Any], spec: FeatureSpec) -> bool:
    """``{"columns": [...], "index": [...], "data": [[...]]}``, unless those are the version's own
    feature names (then the body is one record)."""
    keys = set(body)
    return ({"columns", "data"} <= keys <= {"columns", "data", "index"} and isinstance(body["columns"], list)
            and isinstance(body["data"], list) and not keys & set(spec.column_of))


def _from_items(items: Any, spec: FeatureSpec, max_rows: int, *, where: str, fast: bool = False) -> Matrix:
    if not isinstance(items, list):
        raise InvalidInput(f"{where} must be a list of records or rows")
    if spec.text:
        items = [item if isinstance(item, (dict, list)) else [item] for item in items]  # one string per row
    elif items and all(_is_scalar(v) if spec.types is not None else _is_number(v) or (v is None and spec.allow_nan)
                       for v in items):
        items = [items]  # one bare row, e.g. {"inputs": [5.1, 3.5, 1.4, 0.2]}
    _check_count(len(items), max_rows)
    if fast and spec.types is None and items and type(items[0]) is list:
        numeric = _numeric_rows(items, len(spec.names))
        if numeric is not None:
            return numeric
    rows: list[list[float]] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            rows.append(_record_to_row(item, spec, i))
        elif isinstance(item, list):
            rows.append(_check_row(item, spec, i))
        else:
            raise InvalidInput(f"row {i} must be a record (object) or a row (list)", errors={"row": i})
    return _rows_to_array(rows, spec)


def _from_split(split: Any, spec: FeatureSpec, max_rows: int) -> Matrix:
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list) or not isinstance(
        split.get("data"), list
    ):
        raise InvalidInput("dataframe_split must be an object with 'columns' and 'data' lists")
    columns, data = split["columns"], split["data"]
    mapping = _columns_to_features(columns, spec)
    _check_count(len(data), max_rows)
    rows = []
    for i, values in enumerate(data):
        if not isinstance(values, list):
            raise InvalidInput(f"dataframe_split row {i} must be a list", errors={"row": i})
        if len(values) != len(columns):
            raise InvalidInput(
                f"dataframe_split row {i} has {len(values)} values for {len(columns)} columns",
                errors={"row": i},
            )
        row = [0.0] * len(spec.names)
        for position, value in enumerate(values):
            feature = mapping[position]
            _check_value(value, spec, feature, i)
            row[feature] = value
        rows.append(row)
    return _rows_to_array(rows, spec)


def _columns_to_features(columns: list[Any], spec: FeatureSpec) -> list[int]:
    unknown = [c for c in columns if not isinstance(c, str) or c not in spec.column_of]
    if unknown:
        raise _unknown(unknown, spec)
    mapping = [spec.column_of[c] for c in columns]
    _check_complete(set(mapping), spec, given_twice=len(set(mapping)) != len(mapping))
    return mapping


def _record_to_row(record: dict[str, Any], spec: FeatureSpec, index: int) -> list[float]:
    n = len(spec.names)
    row: list[Any] = [_UNSET] * n
    filled = 0
    unknown = []
    for key, value in record.items():
        column = spec.column_of.get(key)
        if column is None:
            unknown.append(key)
            continue
        if row[column] is not _UNSET:
            raise InvalidInput(
                f"feature {spec.names[column]!r} is given twice (as a name and an alias)",
                errors={"feature": spec.names[column], "row": index},
            )
        _check_value(value, spec, column, index)
        row[column] = value
        filled += 1
    if unknown:
        raise _unknown(unknown, spec, index)
    if filled != n:
        raise _missing([name for name, value in zip(spec.names, row) if value is _UNSET], index)
    return row


_UNSET = object()
# Key orders remembered per version: clients send one or two; a client that varies them is not paid for.
_MAX_ORDERS = 16
_NUMBER_TYPES = frozenset({float, int})


def _one_record(record: dict[str, Any], spec: FeatureSpec) -> Matrix:
    """One record of numbers: read at once when its keys are the names, or keys (names or aliases,
    in the same order) already read whole once; else value by value, which names what is wrong."""
    if record.keys() == spec.plain:
        values = spec.in_order
    else:
        values = spec.orders.get(tuple(record))
    if values is not None:
        row = values(record)
        if set(map(type, row)) <= _NUMBER_TYPES:  # not bool, str, None, list...: exactly float and int
            return np.array([row], dtype=np.float64)
    X = _rows_to_array([_record_to_row(record, spec, 0)], spec)
    if values is None and len(spec.orders) < _MAX_ORDERS:  # every key a distinct feature, none missing
        spec.orders[tuple(record)] = _values_of(tuple(sorted(record, key=spec.column_of.__getitem__)))
    return X


def _check_row(row: list[Any], spec: FeatureSpec, index: int) -> list[Any]:
    if len(row) != len(spec.names):
        raise InvalidInput(
            f"row {index} has {len(row)} values, the model takes {len(spec.names)} "
            f"({', '.join(spec.names)})",
            errors={"row": index, "expected": len(spec.names), "got": len(row)},
        )
    if spec.types is None:
        for value, name in zip(row, spec.names):
            if not _is_number(value):
                _check_missing(value, spec, name, index)
    else:
        for column, value in enumerate(row):
            _check_value(value, spec, column, index)
    return row


def _numeric_rows(items: list[Any], n_features: int) -> np.ndarray | None:
    """Rows of JSON numbers as one float64 array, or None when anything else is in them (the
    value-by-value path then names it). Without booleans in the body, NumPy's own inference is
    exact: strings, nulls, objects or ragged rows never come out as a 2-D int or float array."""
    try:
        array = np.array(items)
    except (ValueError, OverflowError):
        return None
    if array.ndim != 2 or array.shape != (len(items), n_features) or array.dtype.kind not in "if":
        return None
    return array.astype(np.float64, copy=False)


def _rows_to_array(rows: list[list[Any]], spec: FeatureSpec) -> Matrix:
    if not rows:
        raise InvalidInput("no rows to predict")
    if spec.text:
        return [row[0] for row in rows]
    if spec.types is not None:
        return make_frame(rows, spec.names, spec.types)
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(spec.names))


def _check_value(value: Any, spec: FeatureSpec, column: int, row: int) -> None:
    if spec.types is None or spec.types[column] == NUMBER:
        if not _is_number(value):
            _check_missing(value, spec, spec.names[column], row)
    elif type(value) is not str:
        raise InvalidInput(
            f"feature {spec.names[column]!r} must be a string, got {_describe(value)} in row {row}",
            errors={"feature": spec.names[column], "row": row},
        )


def _check_missing(value: Any, spec: FeatureSpec, feature: str, row: int) -> None:
    """null is a missing value for an estimator that takes NaN; anything else that is not a
    number is refused naming the feature."""
    if value is not None:
        raise _non_numeric(feature, value, row)
    if not spec.allow_nan:
        raise InvalidInput(
            f"feature {feature!r} is missing (null) in row {row}, and this model does not accept missing "
            "values; send a number, or register a model that imputes them (e.g. a pipeline starting with "
            "SimpleImputer, or HistGradientBoosting)",
            errors={"feature": feature, "row": row, "missing_values": False},
        )


def _is_scalar(value: Any) -> bool:
    return _is_number(value) or type(value) is str


def _is_number(value: Any) -> bool:
    # bool is an int subclass; a JSON true is not a measurement.
    kind = type(value)
    return kind is float or kind is int


def _check_count(count: int, max_rows: int) -> None:
    if count > max_rows:
        raise TooLarge(f"{count} rows in one request; the limit is {max_rows}",
                       errors={"rows": count, "max_rows": max_rows})


def _check_complete(columns: set[int], spec: FeatureSpec, *, given_twice: bool) -> None:
    if given_twice:
        raise InvalidInput("a feature is given twice (as a name and an alias)")
    missing = [name for i, name in enumerate(spec.names) if i not in columns]
    if missing:
        raise _missing(missing)


def _missing(names: list[str], index: int | None = None) -> InvalidInput:
    errors: dict[str, Any] = {"missing": names}
    if index is not None:
        errors["row"] = index
    return InvalidInput(f"missing feature{'s' if len(names) > 1 else ''}: {', '.join(names)}", errors=errors)


def _unknown(keys: list[Any], spec: FeatureSpec, index: int | None = None) -> InvalidInput:
    names = [str(k) for k in keys]
    errors: dict[str, Any] = {"unknown": names, "expected": list(spec.names)}
    if index is not None:
        errors["row"] = index
    hint = ""
    if list(spec.names) == [f"x{i}" for i in range(len(spec.names))]:
        hint = ("; this version was uploaded without feature names, so its features are named by position: "
                "send rows of values in column order, or upload it again with a `features` field naming them")
    return InvalidInput(
        f"unknown feature{'s' if len(names) > 1 else ''}: {', '.join(names)} "
        f"(the model takes {', '.join(spec.names)}){hint}",
        errors=errors,
    )


def _non_numeric(feature: str, value: Any, index: int) -> InvalidInput:
    return InvalidInput(
        f"feature {feature!r} must be a number, got {_describe(value)} in row {index}",
        errors={"feature": feature, "row": index},
    )


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
