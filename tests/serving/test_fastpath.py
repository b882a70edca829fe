"""The direct predict answers exactly as the estimator's own predict, is used only where it was
verified to, and hands anything the decoder would not build to the estimator's own predict."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.datasets import load_iris, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Perceptron,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC, SVR, LinearSVC, NuSVC, NuSVR, OneClassSVM
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from modelyard.serving import fastpath
from modelyard.serving.fastpath import compile_predict
from modelyard.web.context import Runtime
from tests.factories import make_version

X_IRIS, Y_IRIS = load_iris(return_X_y=True)
Y_BINARY = (Y_IRIS > 0).astype(int)
Y_NAMES = np.array(["setosa", "versicolor", "virginica"], dtype=object)[Y_IRIS]
X_REG, Y_REG = make_regression(120, 4, noise=3.0, random_state=0)

Make = Callable[[], Any]


def _svc_with_probabilities() -> SVC:
    """Deprecated in scikit-learn 1.9, still in the pickles people upload: libsvm gets probA, probB."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return SVC(probability=True, random_state=0).fit(X_IRIS, Y_IRIS)

FAMILIES: dict[str, Make] = {
    "svc linear (the seeded model)": lambda: SVC(kernel="linear").fit(X_IRIS, Y_IRIS),
    "svc rbf, string classes": lambda: SVC().fit(X_IRIS, Y_NAMES),
    "svc poly, binary": lambda: SVC(kernel="poly", degree=2).fit(X_IRIS, Y_BINARY),
    "svc ovo": lambda: SVC(decision_function_shape="ovo").fit(X_IRIS, Y_IRIS),
    "svc with probabilities (libsvm given probA, probB)": _svc_with_probabilities,
    "nusvc sigmoid": lambda: NuSVC(kernel="sigmoid", nu=0.1).fit(X_IRIS, Y_IRIS),
    "svr": lambda: SVR().fit(X_REG, Y_REG),
    "nusvr": lambda: NuSVR(kernel="linear").fit(X_REG, Y_REG),
    "logistic multiclass": lambda: LogisticRegression(max_iter=1000).fit(X_IRIS, Y_IRIS),
    "logistic binary, string classes": lambda: LogisticRegression().fit(X_IRIS, Y_NAMES == "setosa"),
    "linear svc": lambda: LinearSVC().fit(X_IRIS, Y_NAMES),
    "sgd classifier, no intercept": lambda: SGDClassifier(fit_intercept=False, random_state=0).fit(X_IRIS, Y_IRIS),
    "perceptron binary": lambda: Perceptron(random_state=0).fit(X_IRIS, Y_BINARY),
    "linear regression": lambda: LinearRegression().fit(X_REG, Y_REG),
    "linear regression, two outputs": lambda: LinearRegression().fit(X_REG, np.c_[Y_REG, -Y_REG]),
    "ridge, no intercept": lambda: Ridge(fit_intercept=False).fit(X_REG, Y_REG),
    "lasso": lambda: Lasso(alpha=0.5).fit(X_REG, Y_REG),
    "elastic net": lambda: ElasticNet().fit(X_REG, Y_REG),
    "decision tree": lambda: DecisionTreeClassifier(random_state=0).fit(X_IRIS, Y_NAMES),
    "decision tree regressor": lambda: DecisionTreeRegressor(max_depth=4).fit(X_REG, Y_REG),
    "scaler + svc": lambda: make_pipeline(StandardScaler(), SVC()).fit(X_IRIS, Y_IRIS),
    "scaler without mean + passthrough + ridge": lambda: make_pipeline(
        StandardScaler(with_mean=False), "passthrough", Ridge()).fit(X_REG, Y_REG),
    "clipping min-max + logistic": lambda: make_pipeline(
        MinMaxScaler(clip=True), LogisticRegression()).fit(X_IRIS, Y_IRIS),
    "scaler in place + tree": lambda: make_pipeline(
        StandardScaler(copy=False), DecisionTreeClassifier(random_state=0)).fit(X_IRIS.copy(), Y_IRIS),
}


class OwnPredict(SVC):
    def predict(self, X: Any) -> Any:
        return np.full(len(X), self.classes_[0])


OTHERS: dict[str, Make] = {
    "one-class svm": lambda: OneClassSVM().fit(X_IRIS),
    "svc breaking ties": lambda: SVC(break_ties=True).fit(X_IRIS, Y_IRIS),
    "svc with a callable kernel": lambda: SVC(kernel=lambda a, b: a @ b.T).fit(X_IRIS, Y_IRIS),
    "svc fitted on sparse input": lambda: SVC().fit(sp.csr_matrix(X_IRIS), Y_IRIS),
    "subclass with its own predict": lambda: OwnPredict().fit(X_IRIS, Y_IRIS),
    "ridge classifier (multilabel-aware predict)": lambda: RidgeClassifier().fit(X_IRIS, Y_IRIS),
    "sgd regressor": lambda: SGDRegressor(random_state=0).fit(X_REG, Y_REG),
    "sparsified logistic": lambda: LogisticRegression(max_iter=1000).fit(X_IRIS, Y_IRIS).sparsify(),
    "random forest": lambda: RandomForestClassifier(n_estimators=3, random_state=0).fit(X_IRIS, Y_IRIS),
    "pipeline with a step it does not know": lambda: make_pipeline(
        StandardScaler(), SVC(break_ties=True)).fit(X_IRIS, Y_IRIS),
}


def assert_same(got: Any, expected: Any) -> None:
    assert type(got) is type(expected) and got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> Any:
    return FAMILIES[request.param]()


def test_each_family_gets_the_direct_predict(family: Any) -> None:
    assert compile_predict(family).fast


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_direct_predict_answers_exactly_as_the_estimator(family: Any, data: st.DataObject) -> None:
    rows = data.draw(st.integers(1, 40))
    X = data.draw(arrays(np.float64, (rows, family.n_features_in_),
                         elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)))
    compiled = compile_predict(family)
    assert_same(compiled.predict(X.copy()), family.predict(X.copy()))


def test_training_rows_answer_exactly_as_the_estimator(family: Any) -> None:
    X = X_IRIS if family.n_features_in_ == 4 else X_REG
    compiled = compile_predict(family)
    assert_same(compiled.predict(np.ascontiguousarray(X)), family.predict(X.copy()))
    for row in X[:20]:
        assert_same(compiled.predict(row.reshape(1, -1).copy()), family.predict(row.reshape(1, -1)))


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_other_estimators_keep_their_own_predict(name: str) -> None:
    estimator = OTHERS[name]()
    compiled = compile_predict(estimator)
    assert not compiled.fast
    assert compiled.predict == estimator.predict


class OwnKernelHook(SVC):
    def _compute_kernel(self, X: Any) -> Any:
        return super()._compute_kernel(X)  # an override, whatever it does: scikit-learn's path is kept


def test_libsvm_is_called_directly_only_for_svms_that_keep_scikit_learns_dense_predict() -> None:
    assert fastpath._libsvm_predict(SVC(kernel="linear").fit(X_IRIS, Y_IRIS)) is not None
    hooked = OwnKernelHook(kernel="linear").fit(X_IRIS, Y_IRIS)
    assert fastpath._libsvm_predict(hooked) is None
    compiled = compile_predict(hooked)
    assert compiled.fast  # through its own _dense_predict, as before
    assert_same(compiled.predict(np.ascontiguousarray(X_IRIS)), hooked.predict(X_IRIS.copy()))


@pytest.mark.parametrize("misread", [
    lambda svm: lambda X: svm.classes_.take(np.zeros(len(X), dtype=np.intp)),  # other values
    lambda svm: lambda X: svm._dense_predict(X),  # same values as floats, not the classes' dtype
    lambda svm: lambda X: svm.classes_.take(np.asarray(svm._dense_predict(X[:1]), dtype=np.intp)),  # one row
], ids=["values", "dtype", "shape"])
def test_a_direct_predict_that_disagrees_is_not_used(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture, misread: Any) -> None:
    """As if a scikit-learn release changed what its internals mean: the check at load sees it."""
    monkeypatch.setattr(fastpath, "_svm", misread)
    svc = SVC(kernel="linear").fit(X_IRIS, Y_IRIS)
    with caplog.at_level(logging.WARNING, logger="modelyard"):
        compiled = compile_predict(svc)
    assert not compiled.fast and compiled.predict == svc.predict
    assert "differs from scikit-learn's" in caplog.text


def test_a_direct_predict_that_fails_is_not_used(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """As if a scikit-learn release moved an attribute the direct path reads."""
    def moved(svm: Any) -> None:
        raise AttributeError("'SVC' object has no attribute '_dense_predict'")

    monkeypatch.setattr(fastpath, "_svm", moved)
    svc = SVC().fit(X_IRIS, Y_IRIS)
    with caplog.at_level(logging.WARNING, logger="modelyard"):
        compiled = compile_predict(svc)
    assert not compiled.fast and compiled.predict == svc.predict
    assert "no direct predict" in caplog.text


def test_inputs_the_decoder_does_not_build_go_to_the_estimator() -> None:
    svc = SVC(kernel="linear").fit(X_IRIS, Y_IRIS)
    predict = compile_predict(svc).predict
    X = X_IRIS[:5]
    assert_same(predict(np.asfortranarray(X)), svc.predict(X))
    assert_same(predict(X.astype(np.float32)), svc.predict(X))
    assert_same(predict(X.tolist()), svc.predict(X))
    for bad in (np.ones((2, 3)), np.ones((0, 4)), np.ones(4)):
        with pytest.raises(ValueError) as ours:
            predict(bad)
        with pytest.raises(ValueError) as theirs:
            svc.predict(bad)
        assert str(ours.value) == str(theirs.value)


def test_the_callers_array_is_left_alone() -> None:
    """StandardScaler(copy=False) scales its input in place; the direct predict never does."""
    pipeline = make_pipeline(StandardScaler(copy=False), SVC()).fit(X_IRIS.copy(), Y_IRIS)
    X = np.ascontiguousarray(X_IRIS[:10])
    before = X.copy()
    compile_predict(pipeline).predict(X)
    assert np.array_equal(X, before)


def test_version_detail_says_whether_the_direct_predict_serves(client: FlaskClient, runtime: Runtime) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    make_version(runtime, "forest", RandomForestClassifier(n_estimators=3, random_state=0).fit(X_IRIS, Y_IRIS))
    make_version(runtime, "neighbours", KNeighborsClassifier().fit(X_IRIS, Y_IRIS))
    body = {"inputs": X_IRIS[:3].tolist()}
    assert client.get("/models/iris/versions/1").json["fast_path"] is True  # preloaded at start
    assert client.get("/models/neighbours/versions/1").json["fast_path"] is None  # not loaded yet
    for name, fast in (("neighbours", False), ("forest", True)):  # a forest: compiled (serving.forest)
        assert client.post(f"/models/{name}/1/predict", json=body).status_code == 200
        assert client.get(f"/models/{name}/versions/1").json["fast_path"] is fast, name
    iris = client.post("/models/iris/1/predict", json=body)
    assert iris.json["labels"] == ["setosa"] * 3
