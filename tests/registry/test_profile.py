"""Reference profiles (issue 26, part 1): an upload's training rows become, per feature, fixed bins
(decile edges, an underflow and an overflow bin, counts, mean, std, missing rate) or category
counts (top categories, other, missing); the raw rows are not kept. Through the API on both
backends, from CSV and JSON files and form text, with the refusals a bad reference gets."""

from __future__ import annotations

import io
import json
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask.testing import FlaskClient
from sklearn.compose import make_column_transformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from modelyard.app import create_app
from modelyard.registry import profile
from modelyard.web.context import EXTENSION
from tests.conftest import admin_client

RNG = np.random.default_rng(0)
TRAIN = RNG.normal(size=(1000, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, 1.0]
FEATURES = ["a", "b", "c"]


def test_the_bin_of_a_value() -> None:
    edges = [0.0, 1.0, 2.0, 5.0]  # bins: under, [0, 1), [1, 2), [2, 5], over
    assert [profile.bin_of(edges, v) for v in (-0.1, 0.0, 0.5, 1.0, 1.99, 2.0, 5.0, 5.01)] == [0, 1, 1, 2, 2, 3, 3, 4]
    assert [profile.bin_of([3.0], v) for v in (2.0, 3.0, 4.0)] == [0, 1, 2]  # one edge: one bin


def test_a_number_feature_is_its_deciles_and_a_string_feature_its_top_categories() -> None:
    values = [[float(i), ["x", "y", "z", "w"][i % 4] if i % 10 else None] for i in range(1000)]
    values[5][0] = None
    values[6][0] = float("nan")
    found = profile.build(values, ["n", "s"], ["number", "string"], max_rows=10_000, max_categories=2)
    n, s = found["features"]["n"], found["features"]["s"]
    assert found["rows"] == 1000
    assert len(n["edges"]) == 11 and n["edges"][0] == 0.0 and n["edges"][-1] == 999.0
    assert n["counts"][0] == n["counts"][-1] == 0 and sum(n["counts"]) == 998
    assert all(99 <= c <= 101 for c in n["counts"][1:-1])  # a tenth each
    assert n["missing"] == 0.002 and n["mean"] == pytest.approx(np.mean([i for i in range(1000) if i not in (5, 6)]))
    assert s["missing"] == 0.1 and sum(s["counts"].values()) + s["other"] == 900 and len(s["counts"]) == 2
    discrete = profile.build([[v] for v in [1, 1, 1, 2, 2, 3] * 10], ["d"], ["number"], max_rows=100,
                             max_categories=5)["features"]["d"]
    assert discrete["edges"] == [1.0, 2.0, 3.0] and discrete["counts"] == [0, 30, 30, 0]


@pytest.fixture
def small(config: dict[str, dict[str, Any]]) -> Any:
    app = create_app({**config, "observe": {"reference_max_rows": 500, "max_categories": 3}})
    yield admin_client(app)
    app.extensions[EXTENSION].engine.dispose()


def _upload(client: FlaskClient, estimator: Any, reference: Any, name: str = "profiled", **form: str) -> Any:
    data: dict[str, Any] = {"file": (io.BytesIO(pickle.dumps(estimator)), "m.pkl"), **form}
    if reference is not None:
        data["reference"] = reference
    return client.post(f"/models/{name}/versions", data=data, content_type="multipart/form-data")


def test_a_csv_reference_is_profiled_and_not_kept(small: FlaskClient) -> None:
    model = LinearRegression().fit(TRAIN[:400], TRAIN[:400] @ [1.0, 2.0, 3.0])
    csv = pd.DataFrame(TRAIN[:400], columns=FEATURES).to_csv(index=False).encode()
    response = _upload(small, model, (io.BytesIO(csv), "train.csv"), features=json.dumps(FEATURES))
    assert response.status_code == 201, response.json
    found = small.get("/models/profiled/versions/1").json["profile"]
    assert found["rows"] == 400 and list(found["features"]) == FEATURES
    b = found["features"]["b"]
    assert b["kind"] == "number" and b["mean"] == pytest.approx(TRAIN[:400, 1].mean())
    assert b["std"] == pytest.approx(TRAIN[:400, 1].std()) and sum(b["counts"]) == 400
    deciles = np.quantile(TRAIN[:400, 1], np.linspace(0, 1, 11), method="inverted_cdf")
    assert b["edges"] == pytest.approx(deciles.tolist())
    assert "reference" not in json.dumps(small.get("/models/profiled/versions/1").json).replace('"profile"', "")
    bare = _upload(small, model, None)
    assert bare.status_code == 201 and bare.json["profile"] is None


def test_json_records_by_alias_and_a_dataframe_model_with_a_string_column(small: FlaskClient) -> None:
    frame = pd.DataFrame({"colour": ["red", "blue", "green", "red", "teal"] * 20, "size": np.arange(100.0)})
    model = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["colour"]),
                                                  remainder="passthrough"), LogisticRegression())
    model.fit(frame, np.arange(100) % 2)
    records = [{"hue": c, "size": s} for c, s in zip(frame["colour"], frame["size"])]
    response = _upload(small, model, json.dumps(records), feature_aliases=json.dumps({"hue": "colour"}))
    assert response.status_code == 201, response.json
    colour = response.json["profile"]["features"]["colour"]
    assert colour == {"kind": "string", "counts": {"red": 40, "blue": 20, "green": 20}, "other": 20, "missing": 0.0}


@pytest.mark.parametrize(("reference", "words"), [
    (json.dumps([[1.0, 2.0, 3.0]] * 501), "at most 500"),
    (json.dumps([[1.0, "x", 3.0]]), "reference row 0: feature 'b' is a number feature, got 'x'"),
    (json.dumps([{"a": 1.0, "b": 2.0}]), "missing ['c']"),
    (json.dumps([[1.0, 2.0]]), "a row of 3 values"),
    (json.dumps({"a": 1}), "non-empty JSON list"),
    ("a,b,c\n1,2,oops\n", "feature 'c' is a number feature, got 'oops'"),
    ("[[1, 2", "could not be parsed"),
])
def test_a_bad_reference_is_a_422_and_stores_nothing(small: FlaskClient, reference: str, words: str) -> None:
    model = LinearRegression().fit(TRAIN[:50], TRAIN[:50, 0])
    response = _upload(small, model, reference, features=json.dumps(FEATURES))
    assert response.status_code == 422 and words in response.json["message"], response.json
    assert small.get("/models/profiled").status_code == 404


def test_a_text_model_has_no_tabular_profile(small: FlaskClient) -> None:
    texts = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(["good", "bad", "good day", "bad day"],
                                                                      [1, 0, 1, 0])
    response = _upload(small, texts, json.dumps(["good", "bad"]))
    assert response.status_code == 422 and "this model reads texts" in response.json["message"]


def test_the_client_sends_a_dataframe_or_a_file(client: FlaskClient, tmp_path: Any) -> None:
    import httpx

    from modelyard.client import Client

    model = LinearRegression().fit(TRAIN, TRAIN @ [1.0, 2.0, 3.0])
    frame = pd.DataFrame(TRAIN, columns=FEATURES)
    (tmp_path / "train.csv").write_text(frame.to_csv(index=False))
    with Client("http://testserver", token=client.environ_base["HTTP_AUTHORIZATION"].split()[1],
                transport=httpx.WSGITransport(app=client.application)) as remote:
        first = remote.upload(model, "clientside", format="pickle", features=FEATURES, reference=frame)
        second = remote.upload(model, "clientside", format="pickle", features=FEATURES,
                               reference=tmp_path / "train.csv")
    assert first["profile"]["rows"] == second["profile"]["rows"] == 1000
    assert first["profile"]["features"]["c"]["edges"] == pytest.approx(second["profile"]["features"]["c"]["edges"])
