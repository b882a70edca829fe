"""Rows read straight from the body (simdjson) are exactly what the general path builds, and
anything the general path would judge differently is left to it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.registry.errors import InvalidInput, MalformedBody, TooLarge
from modelyard.serving.decode import FeatureSpec, decode
from modelyard.serving.rows import Rows, read_rows

NUMBER = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
)
VALUE = st.one_of(NUMBER, NUMBER, NUMBER, st.booleans(), st.none(), st.text(max_size=3),
                  st.lists(NUMBER, max_size=2))
ROW = st.one_of(st.lists(NUMBER, min_size=0, max_size=5), st.lists(VALUE, min_size=0, max_size=5), NUMBER)


def _spec(columns: int) -> FeatureSpec:
    return FeatureSpec.build([f"f{i}" for i in range(columns)])


@st.composite
def bodies(draw: Any) -> Any:
    columns = draw(st.integers(min_value=1, max_value=5))
    rectangular = st.lists(st.lists(NUMBER, min_size=columns, max_size=columns), min_size=1, max_size=6)
    rows = draw(st.one_of(rectangular, rectangular, st.lists(ROW, max_size=6), st.lists(NUMBER, max_size=5)))
    shape = draw(st.sampled_from(["bare", "inputs", "instances", "other", "extra"]))
    if shape == "bare":
        return rows
    if shape == "extra":
        return {"inputs": rows, draw(st.sampled_from(["x", "instances", "inputs2"])): 1}
    return {shape: rows}


def _general(body: Any, columns: int) -> np.ndarray | Exception:
    try:
        return decode(body, _spec(columns), max_rows=10_000).X
    except (InvalidInput, TooLarge, MalformedBody) as exc:
        return exc


@settings(max_examples=400, deadline=None)
@given(bodies())
def test_whatever_read_rows_accepts_the_general_path_builds_identically(body: Any) -> None:
    raw = json.dumps(body).encode()
    rows = read_rows(raw)
    if rows is None:
        return
    expected = _general(orjson.loads(raw), rows.X.shape[1])
    assert isinstance(expected, np.ndarray), expected
    assert rows.X.dtype == expected.dtype == np.float64
    assert rows.X.shape == expected.shape
    assert np.array_equal(rows.X, expected)
    assert decode(rows, _spec(rows.X.shape[1]), max_rows=10_000).X is rows.X


@settings(max_examples=200, deadline=None)
@given(bodies(), st.integers(min_value=1, max_value=5))
def test_decoding_rows_answers_as_the_general_path(body: Any, columns: int) -> None:
    raw = json.dumps(body).encode()
    rows = read_rows(raw)
    if rows is None:
        return
    _assert_same_outcome(_outcome(rows, _spec(columns), 10_000), _general(orjson.loads(raw), columns))


@pytest.mark.parametrize("raw", [
    b"[[1, 2], [3], [4, 5, 6]]",  # ragged rows that flatten to a rectangle's count
    b"[[1, [2]], [3, 4]]",
    b"[[1, 2], 3]",
    b"[[1, true]]",
    b"[[1, null]]",
    b'[[1, "2"]]',
    b"[[]]",
    b"[]",
    b'{"inputs": [[1]], "x": 1}',
    b'{"inputs": [[1]], "inputs": [[2]]}',  # duplicate keys: the general path keeps the last
    b"[[1, 123456789012345678901234567890]]",
    b"[[1, 2]] trailing",
    b'{"sepal.length": 5.1, "sepal.width": 3.5}',
    b"\xff[[1]]",
])
def test_what_read_rows_leaves_to_the_general_path(raw: bytes) -> None:
    assert read_rows(raw) is None


def test_rows_that_do_not_fit_get_the_general_paths_message() -> None:
    rows = read_rows(b'{"inputs": [[1, 2, 3]]}')
    assert isinstance(rows, Rows)
    with pytest.raises(InvalidInput, match="row 0 has 3 values, the model takes 2"):
        decode(rows, _spec(2), max_rows=10)
    with pytest.raises(TooLarge, match="1 rows in one request; the limit is 0"):
        decode(rows, _spec(3), max_rows=0)
    # A version with a feature literally named "inputs" reads the body as one record.
    with pytest.raises(InvalidInput, match="feature 'inputs' must be a number"):
        decode(rows, FeatureSpec.build(["inputs"]), max_rows=10)


def test_a_parser_is_reused_after_a_refusal() -> None:
    assert read_rows(b"[[1, true]]") is None
    rows = read_rows(b"[[1, 2], [3, 4]]")
    assert rows is not None and rows.X.tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize("rows", [3, 256, 257, 2000])
def test_ragged_rows_are_caught_at_every_size(rows: int) -> None:
    body = [[1.0, 2.0, 3.0]] * rows
    assert read_rows(json.dumps({"inputs": body}).encode()).X.shape == (rows, 3)  # type: ignore[union-attr]
    ragged = [*body[:-2], [1.0, 2.0], [1.0, 2.0, 3.0, 4.0]]  # same count of values as a rectangle
    assert read_rows(json.dumps({"inputs": ragged}).encode()) is None
    ragged = [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0], *body[2:]]
    assert read_rows(json.dumps(ragged).encode()) is None


def _record_the_long_way(record: dict[str, Any], spec: FeatureSpec) -> np.ndarray | Exception:
    from modelyard.serving.decode import _record_to_row, _rows_to_array

    try:
        return _rows_to_array([_record_to_row(record, spec, 0)], spec)
    except (InvalidInput, TooLarge, MalformedBody) as exc:
        return exc


@settings(max_examples=300, deadline=None)
@given(st.lists(VALUE, min_size=3, max_size=3), st.booleans(), st.sampled_from(["names", "alias", "extra", "short"]))
def test_one_record_reads_as_value_by_value(values: list[Any], allow_nan: bool, keys: str) -> None:
    """A record holding exactly the feature names is read in one step; with anything in it
    that is not a number, an alias, an unknown or a missing key, it answers (or refuses) as
    the value-by-value path does."""
    spec = FeatureSpec.build(["a", "b", "c"], {"alias": "b"}, allow_nan=allow_nan)
    record = dict(zip({"names": ["a", "b", "c"], "alias": ["a", "alias", "c"], "extra": ["a", "b", "x"],
                       "short": ["a", "b", "b"]}[keys], values))
    expected = _record_the_long_way(record, spec)
    for _attempt in range(2):  # the second time through the key order the first one remembered, if it did
        got = _outcome(record, spec, 10)
        _assert_same_outcome(got, expected)
        assert not isinstance(got, np.ndarray) or (got.dtype == np.float64 and got.shape == (1, 3))
    assert len(spec.orders) <= 1


def test_remembered_key_orders_are_bounded_and_never_wrong() -> None:
    spec = FeatureSpec.build(["a", "b", "c"], {"alias": "b", "other": "c"})
    names = ["a", "b", "alias", "c", "other"]
    for first in names:  # every order of every choice of three names and aliases, twice each
        for second in names:
            for third in names:
                record = {first: 1.0, second: 2.0, third: 3.0}
                expected = _record_the_long_way(record, spec)
                for _ in range(2):
                    _assert_same_outcome(_outcome(record, spec, 10), expected)
    assert 0 < len(spec.orders) <= 16
    assert decode({"c": 3, "alias": 2, "a": 1}, spec, max_rows=10).X.tolist() == [[1.0, 2.0, 3.0]]


def _outcome(body: Any, spec: FeatureSpec, max_rows: int) -> np.ndarray | Exception:
    """What decode makes of ``body``: the array, or the error it answers with."""
    try:
        X: np.ndarray = decode(body, spec, max_rows=max_rows).X
        return X
    except (InvalidInput, TooLarge, MalformedBody) as exc:
        return exc


def _assert_same_outcome(got: np.ndarray | Exception, expected: np.ndarray | Exception) -> None:
    if isinstance(expected, Exception):
        assert type(got) is type(expected) and str(got) == str(expected)
    else:
        assert isinstance(got, np.ndarray) and np.array_equal(got, expected, equal_nan=True)
