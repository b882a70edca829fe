"""scikit-learn's own catalogue, fitted as a new user would fit it: every estimator that
``sklearn.utils.all_estimators()`` lists with a ``predict`` (classifiers, regressors, clusterers,
outlier detectors), with defaults where it has them and a small base estimator where it needs
one, plus the everyday pipelines people deploy.

Exclusions are listed with their reason in ``EXCLUDED``; ``tests/registry/test_catalogue.py``
fails when an installed scikit-learn lists an estimator that is neither built here nor excluded.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# Estimators with predict that the API cannot carry, each with the reason.
EXCLUDED: dict[str, str] = {
    "AgglomerativeClustering": "no predict (fit_predict only)",
    "DBSCAN": "no predict (fit_predict only)",
    "FeatureAgglomeration": "a transformer, no predict",
    "HDBSCAN": "no predict (fit_predict only)",
    "OPTICS": "no predict (fit_predict only)",
    "SpectralClustering": "no predict (fit_predict only)",
    "LocalOutlierFactor": "predict only with novelty=True; built below as LocalOutlierFactor(novelty=True)",
    "FrozenEstimator": "wraps an already fitted estimator; covered by the estimators it wraps",
}


# Formats that cannot write an estimator at all (the library refuses to save it).
UNWRITABLE: dict[tuple[str, str], str] = {
    ("Birch", "skops"): "skops cannot save Birch (UnsupportedTypeException: its _CFNode tree)",
}


@dataclass(frozen=True)
class Entry:
    name: str
    build: Callable[[], Any]  # returns the fitted estimator
    X: Any  # rows to predict (an array, a DataFrame, or a list of strings)
    proba: bool = True  # compare predict_proba too, when the estimator has it
    fields: dict[str, Any] = field(default_factory=dict)  # upload fields a user would send too


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """60 rows of 4 numeric features; a 3-class target and a positive regression target."""
    rng = np.random.RandomState(0)
    X = rng.rand(60, 4)
    y = np.array([0, 1, 2] * 20)
    yr = 1.0 + 2 * X[:, 0] + 0.1 * rng.rand(60)
    return X, y, yr


def _fit(est: Any, X: Any, y: Any = None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(X) if y is None else est.fit(X, y)


def _defaults() -> list[Entry]:
    from sklearn.base import is_classifier, is_regressor
    from sklearn.utils import all_estimators

    X, y, yr = data()
    entries = []
    for name, cls in all_estimators():
        if name in EXCLUDED or name in _SPECIAL or not hasattr(cls, "predict"):
            continue
        try:
            instance = cls()
        except TypeError:
            continue  # needs a base estimator: in _SPECIAL, or the completeness test fails
        if is_classifier(instance):
            target: Any = y
        elif is_regressor(instance):
            target = yr
        else:  # clusterers, outlier detectors, mixtures: fitted on X alone
            target = None
        entries.append(Entry(name, lambda cls=cls, target=target: _fit(cls(), X, target), X[:5]))
    return entries


def _special() -> dict[str, Callable[[], Any]]:
    """Estimators without usable defaults, fitted the way their documentation shows."""
    from sklearn import (
        cross_decomposition,
        ensemble,
        isotonic,
        linear_model,
        model_selection,
        multiclass,
        multioutput,
        neighbors,
        pipeline,
        preprocessing,
        semi_supervised,
        svm,
        tree,
    )
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401 - enables the halving searches

    X, y, yr = data()
    Y = np.column_stack([y == 0, y == 1]).astype(int)
    Yr = np.column_stack([yr, yr * 2])
    yb = (y > 0).astype(int)
    lr = lambda: linear_model.LogisticRegression(max_iter=500)  # noqa: E731
    return {
        "ClassifierChain": lambda: _fit(multioutput.ClassifierChain(lr()), X, Y),
        "FixedThresholdClassifier": lambda: _fit(model_selection.FixedThresholdClassifier(lr()), X, yb),
        "MultiOutputClassifier": lambda: _fit(multioutput.MultiOutputClassifier(lr()), X, Y),
        "OneVsOneClassifier": lambda: _fit(multiclass.OneVsOneClassifier(svm.LinearSVC()), X, y),
        "OneVsRestClassifier": lambda: _fit(multiclass.OneVsRestClassifier(lr()), X, y),
        "OutputCodeClassifier": lambda: _fit(multiclass.OutputCodeClassifier(lr(), random_state=0), X, y),
        "SelfTrainingClassifier": lambda: _fit(semi_supervised.SelfTrainingClassifier(lr()), X, np.where(np.arange(60) % 4 == 0, -1, y)),
        "StackingClassifier": lambda: _fit(ensemble.StackingClassifier([("lr", lr()), ("tree", tree.DecisionTreeClassifier(random_state=0))]), X, y),
        "TunedThresholdClassifierCV": lambda: _fit(model_selection.TunedThresholdClassifierCV(lr()), X, yb),
        "VotingClassifier": lambda: _fit(ensemble.VotingClassifier([("lr", lr()), ("knn", neighbors.KNeighborsClassifier())], voting="soft"), X, y),
        "CCA": lambda: _fit(cross_decomposition.CCA(n_components=1), X, yr),
        "PLSCanonical": lambda: _fit(cross_decomposition.PLSCanonical(n_components=1), X, yr),
        "IsotonicRegression": lambda: _fit(isotonic.IsotonicRegression(out_of_bounds="clip"), X[:, 0], yr),
        "MultiOutputRegressor": lambda: _fit(multioutput.MultiOutputRegressor(linear_model.Ridge()), X, Yr),
        "MultiTaskElasticNet": lambda: _fit(linear_model.MultiTaskElasticNet(alpha=0.01), X, Yr),
        "MultiTaskElasticNetCV": lambda: _fit(linear_model.MultiTaskElasticNetCV(), X, Yr),
        "MultiTaskLasso": lambda: _fit(linear_model.MultiTaskLasso(alpha=0.01), X, Yr),
        "MultiTaskLassoCV": lambda: _fit(linear_model.MultiTaskLassoCV(), X, Yr),
        "RegressorChain": lambda: _fit(multioutput.RegressorChain(linear_model.Ridge()), X, Yr),
        "StackingRegressor": lambda: _fit(ensemble.StackingRegressor([("ridge", linear_model.Ridge()), ("tree", tree.DecisionTreeRegressor(random_state=0))]), X, yr),
        "VotingRegressor": lambda: _fit(ensemble.VotingRegressor([("ridge", linear_model.Ridge()), ("tree", tree.DecisionTreeRegressor(random_state=0))]), X, yr),
        "GridSearchCV": lambda: _fit(model_selection.GridSearchCV(svm.SVC(), {"C": [0.5, 1.0]}), X, y),
        "RandomizedSearchCV": lambda: _fit(model_selection.RandomizedSearchCV(lr(), {"C": [0.1, 1.0, 10.0]}, n_iter=2, random_state=0), X, y),
        "HalvingGridSearchCV": lambda: _fit(model_selection.HalvingGridSearchCV(svm.SVC(), {"C": [0.5, 1.0]}, random_state=0), X, y),
        "HalvingRandomSearchCV": lambda: _fit(model_selection.HalvingRandomSearchCV(svm.SVC(), {"C": [0.5, 1.0]}, random_state=0), X, y),
        "Pipeline": lambda: _fit(pipeline.Pipeline([("scale", preprocessing.StandardScaler()), ("lr", lr())]), X, y),
        "RFE": lambda: _fit(__import__("sklearn.feature_selection", fromlist=["RFE"]).RFE(lr(), n_features_to_select=2), X, y),
        "RFECV": lambda: _fit(__import__("sklearn.feature_selection", fromlist=["RFECV"]).RFECV(lr()), X, y),
        "LocalOutlierFactor(novelty=True)": lambda: _fit(neighbors.LocalOutlierFactor(novelty=True), X),
    }


_SPECIAL = frozenset({
    "ClassifierChain", "FixedThresholdClassifier", "MultiOutputClassifier", "OneVsOneClassifier",
    "OneVsRestClassifier", "OutputCodeClassifier", "SelfTrainingClassifier", "StackingClassifier",
    "TunedThresholdClassifierCV", "VotingClassifier", "CCA", "PLSCanonical", "IsotonicRegression",
    "MultiOutputRegressor", "MultiTaskElasticNet", "MultiTaskElasticNetCV", "MultiTaskLasso",
    "MultiTaskLassoCV", "RegressorChain", "StackingRegressor", "VotingRegressor", "GridSearchCV",
    "RandomizedSearchCV", "HalvingGridSearchCV", "HalvingRandomSearchCV", "Pipeline", "RFE", "RFECV",
})


def _pipelines() -> list[Entry]:
    """The pipelines people deploy."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor, make_column_selector
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.feature_selection import SelectKBest, f_classif
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
    from sklearn.svm import SVC

    X, y, yr = data()
    frame = pd.DataFrame({"colour": ["red", "blue", "green"] * 20, "size": X[:, 0], "weight": X[:, 1]})
    texts = ["good great fine", "bad awful poor", "meh so so"] * 20
    reviews = frame.assign(review=texts)
    reviews.loc[::4, "size"] = np.nan
    with_nan = X.copy()
    with_nan[::7, 1] = np.nan
    return [
        Entry("scaler+logistic", lambda: _fit(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), X, y), X[:5]),
        Entry("imputer+hist-gradient-boosting", lambda: _fit(make_pipeline(SimpleImputer(), HistGradientBoostingClassifier(max_iter=10)), with_nan, y), with_nan[:8]),
        Entry("pca+svc", lambda: _fit(make_pipeline(PCA(n_components=2), SVC(probability=True, random_state=0)), X, y), X[:5]),
        Entry("columntransformer-onehot", lambda: _fit(make_pipeline(
            ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), ["colour"])], remainder="passthrough"),
            LogisticRegression(max_iter=500)), frame, y), frame.iloc[:5]),
        Entry("columntransformer-selector", lambda: _fit(make_pipeline(
            ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), make_column_selector(dtype_include=object)),
                               ("scale", StandardScaler(), make_column_selector(dtype_include=np.number))]),
            RandomForestClassifier(n_estimators=5, random_state=0)), frame, y), frame.iloc[:5]),
        Entry("columntransformer-text-imputed-onehot", lambda: _fit(make_pipeline(
            ColumnTransformer([("text", TfidfVectorizer(), "review"), ("impute", SimpleImputer(), ["size", "weight"]),
                               ("onehot", OneHotEncoder(handle_unknown="ignore"), ["colour"])]),
            LogisticRegression(max_iter=500)), reviews, y), reviews.iloc[:6]),
        Entry("stacking", lambda: _special()["StackingClassifier"](), X[:5]),
        Entry("voting", lambda: _special()["VotingClassifier"](), X[:5]),
        Entry("calibrated-svc", lambda: _fit(CalibratedClassifierCV(SVC(), ensemble=False), X, y), X[:5]),
        Entry("mlp", lambda: _fit(make_pipeline(StandardScaler(), MLPClassifier(max_iter=50, random_state=0)), X, y), X[:5]),
        Entry("sgd-log-loss", lambda: _fit(SGDClassifier(loss="log_loss", random_state=0), X, y), X[:5]),
        Entry("transformed-target-log", lambda: _fit(TransformedTargetRegressor(LinearRegression(), func=np.log, inverse_func=np.exp), X, yr), X[:5]),
        Entry("function-transformer-log1p", lambda: _fit(make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=500)), X, y), X[:5]),
        Entry("selectkbest+logistic", lambda: _fit(make_pipeline(SelectKBest(f_classif, k=2), LogisticRegression(max_iter=500)), X, y), X[:5]),
        Entry("tfidf+logistic", lambda: _fit(make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=500)), texts, y), texts[:3]),
    ]


def entries() -> list[Entry]:
    """Every catalogue entry, unfitted (``build`` fits)."""
    X = data()[0]
    special = [
        Entry(name, build, X[:5, :1]) if name == "IsotonicRegression"  # one feature, known from its thresholds
        else Entry(name, build, X[:5])
        for name, build in _special().items()
    ]
    return _defaults() + special + _pipelines()


def listed() -> set[str]:
    """The names ``all_estimators()`` lists with a ``predict`` method."""
    from sklearn.utils import all_estimators

    return {name for name, cls in all_estimators() if hasattr(cls, "predict")}
