"""scikit-learn's catalogue, uploaded over HTTP as pickle, joblib and skops: every entry is
accepted and answers exactly what the estimator answers in process (predictions and
probabilities)."""

from __future__ import annotations

import io
import json
import pickle
import warnings
from collections.abc import Iterator
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io
from flask import Flask

from modelyard.app import create_app
from modelyard.web.context import EXTENSION
from tests.conftest import admin_client, config_in
from tests.registry import catalogue

FORMATS = ("pickle", "joblib", "skops")


@pytest.fixture(scope="module")
def catalogue_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    # SQLite only: what is checked here (scan, sandbox, structure checks, predictions) happens
    # before and apart from the database; uploads through PostgreSQL are tests/registry/test_upload.py's.
    # Every version is served through its mapped copy (serving.mapped: one copy per host; those
    # holding trees excepted), whatever its size: its predictions are checked against the estimator's.
    app = create_app(config_in(tmp_path_factory.mktemp("catalogue"), cache={"mapped_min_bytes": 1}))
    yield app
    app.extensions[EXTENSION].engine.dispose()


def dump(estimator: Any, fmt: str) -> bytes:
    if fmt == "pickle":
        return pickle.dumps(estimator, protocol=5)
    if fmt == "joblib":
        buffer = io.BytesIO()
        joblib.dump(estimator, buffer)
        return buffer.getvalue()
    return skops.io.dumps(estimator)


def body_for(X: Any) -> dict[str, Any]:
    """The request a client would send for rows ``X``: rows of numbers (missing values as
    null), a DataFrame as ``dataframe_split``, texts as instances."""
    if isinstance(X, pd.DataFrame):
        rows = [[None if isinstance(v, float) and np.isnan(v) else v for v in row] for row in X.astype(object).values]
        return {"dataframe_split": {"columns": list(X.columns), "data": rows}}
    if isinstance(X, list):
        return {"instances": X}
    rows = [[None if np.isnan(v) else float(v) for v in row] for row in np.asarray(X, dtype=float)]
    return {"inputs": rows}


def test_every_listed_estimator_is_built_or_excluded_with_a_reason() -> None:
    built = {entry.name for entry in catalogue.entries()}
    assert sorted(catalogue.listed() - built - set(catalogue.EXCLUDED)) == []


@pytest.mark.parametrize("entry", catalogue.entries(), ids=lambda e: e.name)
def test_catalogue_entry_is_accepted_and_predicts_as_in_process(catalogue_app: Flask, entry: catalogue.Entry) -> None:
    client = admin_client(catalogue_app)
    estimator = entry.build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.asarray(estimator.predict(entry.X))
        proba = estimator.predict_proba(entry.X) if entry.proba and hasattr(estimator, "predict_proba") else None
    name = "".join(c if c.isalnum() else "-" for c in entry.name)
    for fmt in FORMATS:
        if (entry.name, fmt) in catalogue.UNWRITABLE:
            continue
        form = {key: json.dumps(value) for key, value in entry.fields.items()}
        form["file"] = (io.BytesIO(dump(estimator, fmt)), f"model.{fmt}")
        response = client.post(f"/models/{name}/versions", data=form, content_type="multipart/form-data")
        assert response.status_code == 201, (fmt, response.json)
        version = response.json["version"]
        answer = client.post(f"/models/{name}/{version}/predict", json=body_for(entry.X))
        assert answer.status_code == 200, (fmt, answer.json)
        _assert_same(answer.json["predictions"], expected, fmt)
        if proba is not None:
            answer = client.post(f"/models/{name}/{version}/predict?proba=true", json=body_for(entry.X))
            assert answer.status_code == 200, (fmt, answer.json)
            got = answer.json["probabilities"]
            if isinstance(proba, list):  # multi-output: one array per output
                assert len(got) == len(proba)
                for g, p in zip(got, proba):
                    np.testing.assert_allclose(np.asarray(g, dtype=float), p, rtol=1e-9, atol=1e-12)
            else:
                np.testing.assert_allclose(np.asarray(got, dtype=float), proba, rtol=1e-9, atol=1e-12)


def _assert_same(got: list[Any], expected: np.ndarray, fmt: str) -> None:
    if expected.dtype.kind in "fc":
        np.testing.assert_allclose(np.asarray(got, dtype=float), expected.astype(float), rtol=1e-9, atol=1e-12,
                                   err_msg=fmt)
    else:
        assert got == expected.tolist(), fmt


@pytest.mark.parametrize("name, fmt", sorted(catalogue.UNWRITABLE), ids=lambda v: str(v))
def test_an_unwritable_format_really_cannot_be_written(name: str, fmt: str) -> None:
    """An exclusion stays honest: the day skops can write Birch, this fails and the exclusion goes."""
    entry = next(e for e in catalogue.entries() if e.name == name)
    with pytest.raises(Exception, match="not supported"):
        dump(entry.build(), fmt)
