"""Maintenance use cases: re-trial every stored version (``modelyard check``, before a library
upgrade) and collect the blobs no version refers to (``modelyard gc``). Each reads the registry
and changes nothing but what it says it removes."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.registry import introspect, sandbox
from modelyard.registry.errors import ModelyardError
from modelyard.registry.models import Model, ModelVersion
from modelyard.registry.storage import ArtifactStore

GC_GRACE_SECONDS = 3600.0  # a blob put this recently may belong to an upload still committing


def collect_orphans(
    session: Session, store: ArtifactStore, *, grace_seconds: float = GC_GRACE_SECONDS, dry_run: bool = False,
) -> dict[str, Any]:
    """Find (and unless ``dry_run`` remove) blobs no version refers to, last put more than
    ``grace_seconds`` ago, and partial writes a killed upload left. A process killed between
    storing a blob and committing its row leaves such an orphan; nothing else removes it.

    The grace period protects uploads in flight: their blob is put (its time refreshed) before
    their row commits, and an upload re-stores its blob after committing if it was removed.
    """
    cutoff = time.time() - grace_seconds
    candidates = {sha: mtime for sha, mtime in store.digests() if mtime < cutoff}
    referenced = set(session.scalars(select(ModelVersion.sha256).distinct()))
    session.rollback()
    orphans = sorted(sha for sha in candidates if sha not in referenced)
    temporaries = 0
    if not dry_run:
        for sha in orphans:
            # Re-checked one by one: a version committed since the read above keeps its blob.
            if session.scalar(select(ModelVersion.id).where(ModelVersion.sha256 == sha).limit(1)) is None:
                store.delete(sha)
            session.rollback()
        temporaries = store.remove_stale_temporaries(cutoff)
    return {"orphans": orphans, "removed": not dry_run, "stale_temporaries": temporaries}


def check_versions(session: Session, store: ArtifactStore, *, limits: sandbox.Limits) -> dict[str, Any]:
    """Re-trial every stored version in the sandbox under the installed libraries: load it
    through the safety gate, inspect it and predict its upload example (or probe rows).

    Each is ``ok``, ``warning`` (loads and predicts, with load warnings, e.g. a scikit-learn
    version mismatch) or ``broken`` (with the reason: refused, fails to load or predict, or
    would now be fed differently). Reads only; changes nothing.
    """
    rows = session.execute(
        select(Model.name, ModelVersion).join(ModelVersion, ModelVersion.model_id == Model.id)
        .order_by(Model.name, ModelVersion.version)
    ).all()
    session.rollback()  # release the connection: trials take a while
    results = []
    for name, version in rows:
        status, reason, warnings, pickled = "ok", "", list(version.load_warnings or []), None
        try:
            trial = sandbox.Trial(list(version.feature_names), dict(version.feature_aliases or {}), version.example)
            info = sandbox.inspect_artifact(store.open(version.sha256), version.format, spec=trial, limits=limits)
            warnings, pickled = info.load_warnings, info.pickled_with
            if info.input_kind != version.input_kind:
                status, reason = "broken", (f"it would now take {info.input_kind} input, "
                                            f"but was registered taking {version.input_kind}")
            elif warnings:
                status, reason = "warning", warnings[0]
        except ModelyardError as exc:
            status, reason = "broken", exc.message
        results.append({"model": name, "version": version.version, "status": status, "reason": reason,
                        "load_warnings": warnings, "sklearn_pickled": pickled})
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "warning", "broken")}
    return {"libraries": introspect.library_versions(), "counts": counts, "results": results}


def discard_unreferenced(session: Session, store: ArtifactStore, digests: Iterable[str]) -> None:
    """Remove the blobs no committed row points at: after a delete, and after a failed commit
    (which must not leave an orphan). Ends the session's transaction."""
    for sha256 in digests:
        session.rollback()
        if session.scalar(select(ModelVersion.id).where(ModelVersion.sha256 == sha256).limit(1)) is None:
            store.delete(sha256)
    session.rollback()
