"""Test data through the service layer: fit a tiny estimator and register it for real."""

from __future__ import annotations

import pickle
from typing import Any

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelyard.registry import aliases, service, upload
from modelyard.registry.queries import VersionView
from modelyard.registry.seed import IRIS_FEATURES, IRIS_LABELS
from modelyard.web.context import Runtime

X, y = load_iris(return_X_y=True)


def fitted_logreg() -> LogisticRegression:
    return LogisticRegression(max_iter=500).fit(X, y)


def make_version(
    rt: Runtime, name: str = "flowers", estimator: Any = None, *,
    feature_names: list[str] | None = None, labels: list[str] | None = IRIS_LABELS,
    alias: str | None = None, **spec: Any,
) -> VersionView:
    """Register a version of ``name`` (default: a LogisticRegression on Iris) and optionally alias it."""
    estimator = estimator if estimator is not None else fitted_logreg()
    version_spec = upload.VersionSpec(
        fmt="pickle",
        feature_names=feature_names if feature_names is not None else IRIS_FEATURES,
        labels=labels,
        **spec,
    )
    with rt.sessions() as session:
        version = service.register_version(session, rt.store, name, pickle.dumps(estimator), version_spec)
        if alias:
            aliases.set_alias(session, name, alias, str(version.version))
    return version


def tamper(store: Any, digest: str, data: bytes) -> None:
    """Change a stored blob's bytes behind the store's back, in whichever store holds it (the
    local file, or the database's first chunk)."""
    from sqlalchemy import update

    from modelyard.registry.dbstore import DatabaseArtifactStore
    from modelyard.registry.models import ArtifactChunk
    from modelyard.registry.storage import LocalArtifactStore

    if isinstance(store, LocalArtifactStore):
        store.path_for(digest).write_bytes(data)
        return
    assert isinstance(store, DatabaseArtifactStore)
    with store.engine.begin() as conn:
        conn.execute(update(ArtifactChunk).where(ArtifactChunk.sha256 == digest, ArtifactChunk.seq == 0)
                     .values(data=data))


def stored_digests(store: Any) -> set[str]:
    """Every blob a store holds."""
    return {sha for sha, _ in store.digests()}
