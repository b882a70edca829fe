"""The seeded default: the tutorial's Iris ``SVC(kernel='linear')``, so a fresh install serves."""

from __future__ import annotations

import pickle

from sqlalchemy.orm import Session

from modelyard.registry.queries import model_exists
from modelyard.registry.service import seed_model
from modelyard.registry.storage import ArtifactStore
from modelyard.registry.upload import VersionSpec

IRIS_FEATURES = ["sepal.length", "sepal.width", "petal.length", "petal.width"]
IRIS_LABELS = ["setosa", "versicolor", "virginica"]
# The tutorial's clients send these misspellings; they stay a declared property of the version.
IRIS_FEATURE_ALIASES = {"sepal.lenght": "sepal.length", "petal.lenght": "petal.length"}


def train_iris_svc() -> bytes:
    """Fit the tutorial's model on scikit-learn's bundled Iris data and pickle it."""
    from sklearn.datasets import load_iris
    from sklearn.svm import SVC

    X, y = load_iris(return_X_y=True)
    return pickle.dumps(SVC(kernel="linear").fit(X, y), protocol=pickle.HIGHEST_PROTOCOL)


def seed_iris(session: Session, store: ArtifactStore, name: str = "iris") -> bool:
    """Register the Iris SVC as ``name`` version 1 with alias ``production`` unless it exists."""
    if model_exists(session, name):
        return False
    spec = VersionSpec(
        fmt="pickle",
        description="The tutorial's SVC(kernel='linear') fitted on the Iris data set",
        feature_names=IRIS_FEATURES,
        feature_aliases=IRIS_FEATURE_ALIASES,
        labels=IRIS_LABELS,
        tags={"source": "seed"},
    )
    return seed_model(
        session, store, name, train_iris_svc(), spec,
        description="Iris species classifier (seeded default)",
    )
