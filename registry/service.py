"""Registry use cases. Plain functions: a Session (and a store) first, plain values after.

Read functions never commit; each write use case is one transaction with one commit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry import introspect, safety
from registry.errors import InvalidInput, ModelNotFound, VersionNotFound
from registry.models import Alias, Event, Model, ModelVersion
from registry.storage import ArtifactStore

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LATEST = "latest"
_VERSION_REF = re.compile(r"^[vV]?([0-9]{1,18})$")


def parse_version_ref(ref: str) -> int | None:
    """The version number a ref names (``3`` or ``v3``), or None when it names an alias."""
    match = _VERSION_REF.match(ref)
    return int(match.group(1)) if match else None


# --- reads -------------------------------------------------------------------------------------


def get_model(session: Session, name: str) -> Model:
    model = session.scalar(select(Model).where(Model.name == name))
    if model is None:
        raise ModelNotFound(name)
    return model


def model_exists(session: Session, name: str) -> bool:
    return session.scalar(select(Model.id).where(Model.name == name)) is not None


def list_models(
    session: Session, *, q: str | None = None, tag: tuple[str, str] | None = None,
    offset: int = 0, limit: int = 10,
) -> tuple[list[dict[str, Any]], int]:
    """A page of model views ordered by name, filtered by name substring and one ``key:value``
    tag, and the total count matching."""
    query = select(Model)
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Model.name.like(f"%{escaped}%", escape="\\"))
    models = list(session.scalars(query.order_by(Model.name)))
    if tag is not None:
        # Tags are a small JSON object per model; filtering here keeps one query on every backend.
        key, value = tag
        models = [m for m in models if (m.tags or {}).get(key) == value]
    return describe_models(session, models[offset : offset + limit]), len(models)


def list_versions(
    session: Session, name: str, *, offset: int = 0, limit: int = 10
) -> tuple[list[dict[str, Any]], int]:
    """A page of a model's version views, newest first, and the total count."""
    model = get_model(session, name)
    total = session.scalar(select(func.count()).where(ModelVersion.model_id == model.id)) or 0
    versions = session.scalars(
        select(ModelVersion)
        .where(ModelVersion.model_id == model.id)
        .order_by(ModelVersion.version.desc())
        .offset(offset)
        .limit(limit)
    )
    return describe_versions(session, name, list(versions)), total


def resolve_version(session: Session, name: str, ref: str) -> ModelVersion:
    """The version a ref names: a number (``3`` or ``v3``), ``latest``, or an alias.

    One indexed query on the success path. Raises :class:`ModelNotFound` or
    :class:`VersionNotFound`.
    """
    return _resolve(session, select(ModelVersion), name, ref)


def resolve_version_key(session: Session, name: str, ref: str) -> tuple[int, str]:
    """``(version number, sha256)`` for a ref: the same lookup as :func:`resolve_version`
    without loading the row, for the predict path."""
    return _resolve(session, select(ModelVersion.version, ModelVersion.sha256), name, ref, scalar=False)


def _resolve(session: Session, query: Select[Any], name: str, ref: str, *, scalar: bool = True) -> Any:
    query = query.join(Model, ModelVersion.model_id == Model.id).where(Model.name == name)
    number = parse_version_ref(ref)
    if number is not None:
        query = query.where(ModelVersion.version == number)
    elif ref.lower() == LATEST:
        query = query.order_by(ModelVersion.version.desc()).limit(1)
    else:
        query = query.join(Alias, Alias.version_id == ModelVersion.id).where(Alias.name == ref)
    found = session.scalar(query) if scalar else session.execute(query).first()
    if found is None:
        get_model(session, name)
        raise VersionNotFound(name, ref)
    return found if scalar else tuple(found)


def load_estimator(store: ArtifactStore, version: ModelVersion) -> Any:
    """Read the version's artifact (digest checked) and unpickle it through the safety gate."""
    return safety.load(store.open(version.sha256), version.format)


def aliases_of(session: Session, model: Model) -> dict[str, int]:
    """``{alias: version number}`` for a model."""
    rows = session.execute(
        select(Alias.name, ModelVersion.version)
        .join(ModelVersion, Alias.version_id == ModelVersion.id)
        .where(Alias.model_id == model.id)
        .order_by(Alias.name)
    )
    return {alias: version for alias, version in rows}


# --- read models for the API --------------------------------------------------------------------


def describe_models(session: Session, models: Sequence[Model]) -> list[dict[str, Any]]:
    """API views of ``models`` (aliases, latest version, count) in three queries, not 3N."""
    ids = [m.id for m in models]
    if not ids:
        return []
    aliases: dict[int, dict[str, int]] = {i: {} for i in ids}
    for model_id, alias, number in session.execute(
        select(Alias.model_id, Alias.name, ModelVersion.version)
        .join(ModelVersion, Alias.version_id == ModelVersion.id)
        .where(Alias.model_id.in_(ids))
        .order_by(Alias.name)
    ):
        aliases[model_id][alias] = number
    stats = {
        model_id: (latest, count)
        for model_id, latest, count in session.execute(
            select(ModelVersion.model_id, func.max(ModelVersion.version), func.count())
            .where(ModelVersion.model_id.in_(ids))
            .group_by(ModelVersion.model_id)
        )
    }
    return [
        {
            "name": m.name,
            "description": m.description,
            "tags": m.tags,
            "latest_version": stats.get(m.id, (None, 0))[0],
            "version_count": stats.get(m.id, (None, 0))[1],
            "aliases": aliases[m.id],
            "created_at": m.created_at,
            "updated_at": m.updated_at,
        }
        for m in models
    ]


def model_detail(session: Session, name: str) -> dict[str, Any]:
    return describe_models(session, [get_model(session, name)])[0]


def describe_versions(session: Session, name: str, versions: Sequence[ModelVersion]) -> list[dict[str, Any]]:
    """API views of versions of one model, each with the aliases that point at it."""
    pointing: dict[int, list[str]] = {}
    if versions:
        for alias, version_id in session.execute(
            select(Alias.name, Alias.version_id)
            .where(Alias.version_id.in_([v.id for v in versions]))
            .order_by(Alias.name)
        ):
            pointing.setdefault(version_id, []).append(alias)
    return [
        {
            "name": name,
            "version": v.version,
            "sha256": v.sha256,
            "size_bytes": v.size_bytes,
            "format": v.format,
            "estimator": v.estimator,
            "n_features": v.n_features,
            "feature_names": v.feature_names,
            "feature_aliases": v.feature_aliases,
            "classes": v.classes,
            "labels": v.labels,
            "has_proba": v.has_proba,
            "library_versions": v.library_versions,
            "description": v.description,
            "metadata": {"metrics": v.metrics, "params": v.params},
            "tags": v.tags,
            "aliases": pointing.get(v.id, []),
            "created_at": v.created_at,
            "created_by": v.created_by,
        }
        for v in versions
    ]


def version_detail(session: Session, name: str, ref: str) -> dict[str, Any]:
    return describe_versions(session, name, [resolve_version(session, name, ref)])[0]


def model_aliases(session: Session, name: str) -> dict[str, int]:
    return aliases_of(session, get_model(session, name))


# --- writes ------------------------------------------------------------------------------------


@dataclass
class VersionSpec:
    """What the uploader says about a version; everything else is read off the estimator."""

    fmt: str = "pickle"
    description: str = ""
    feature_names: Sequence[str] | None = None
    feature_aliases: dict[str, str] = field(default_factory=dict)
    labels: Sequence[Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def seed_model(
    session: Session, store: ArtifactStore, name: str, data: bytes, spec: VersionSpec, *,
    description: str = "", alias: str = "production", actor: str = "modelyard",
) -> bool:
    """Register ``data`` as version 1 of a new model ``name`` with ``alias``, unless it exists.

    Idempotent and safe to race: returns False when the model already exists (also when a
    concurrent process created it first).
    """
    if model_exists(session, name):
        return False
    prepared = _prepare_version(data, spec)
    sha256 = store.put(data)
    try:
        model = _create_model(session, name, description=description, tags={}, actor=actor)
        version = _add_version(session, model, prepared, sha256, len(data), actor=actor)
        _set_alias(session, model, alias, version, actor=actor)
        session.commit()
    except IntegrityError:
        session.rollback()
        _discard_if_unreferenced(session, store, sha256)
        return False
    except BaseException:
        session.rollback()
        _discard_if_unreferenced(session, store, sha256)
        raise
    return True


def register_version(
    session: Session, store: ArtifactStore, name: str, data: bytes, spec: VersionSpec, *,
    actor: str = "anonymous",
) -> ModelVersion:
    """Store ``data`` as the next version of ``name`` (created if missing); one transaction.

    The artifact is scanned, trial-loaded and inspected before anything is stored; the blob is
    in place before the row commits, and removed again if the commit fails.
    Raises UnsafeArtifact / InvalidArtifact / InvalidInput (422).
    """
    prepared = _prepare_version(data, spec)
    sha256 = store.put(data)
    try:
        model = session.scalar(select(Model).where(Model.name == name))
        if model is None:
            model = _create_model(session, name, description="", tags={}, actor=actor)
        version = _add_version(session, model, prepared, sha256, len(data), actor=actor)
        session.commit()
    except BaseException:
        session.rollback()
        _discard_if_unreferenced(session, store, sha256)
        raise
    return version


def set_alias(session: Session, name: str, alias: str, ref: str, *, actor: str = "anonymous") -> ModelVersion:
    """Point ``alias`` of model ``name`` at the version ``ref`` names; one transaction."""
    version = resolve_version(session, name, ref)
    _set_alias(session, version.model, alias, version, actor=actor)
    session.commit()
    return version


def _discard_if_unreferenced(session: Session, store: ArtifactStore, sha256: str) -> None:
    """Remove a blob no committed row points at (a failed commit must not leave an orphan)."""
    if session.scalar(select(ModelVersion.id).where(ModelVersion.sha256 == sha256).limit(1)) is None:
        store.delete(sha256)


@dataclass(frozen=True)
class _Prepared:
    spec: VersionSpec
    info: introspect.EstimatorInfo
    feature_names: list[str]
    labels: list[Any] | None


def _prepare_version(data: bytes, spec: VersionSpec) -> _Prepared:
    """Scan, load and inspect an artifact, and check what the uploader said against it."""
    estimator = safety.load(data, spec.fmt)
    info = introspect.describe(estimator)
    names = list(spec.feature_names) if spec.feature_names is not None else info.feature_names
    if names is None:
        if info.n_features is None:
            raise InvalidInput("the estimator does not record its features; give feature names")
        names = [f"x{i}" for i in range(info.n_features)]
    if info.n_features is not None and len(names) != info.n_features:
        raise InvalidInput(
            f"{len(names)} feature names given, but the estimator takes {info.n_features} features",
            errors={"features": names},
        )
    if len(set(names)) != len(names):
        raise InvalidInput("feature names must be unique", errors={"features": names})
    unknown_targets = sorted({t for t in spec.feature_aliases.values() if t not in names})
    if unknown_targets:
        raise InvalidInput(
            f"feature aliases point at unknown features: {', '.join(unknown_targets)}",
            errors={"feature_aliases": unknown_targets},
        )
    labels = list(spec.labels) if spec.labels is not None else None
    if labels is not None and (info.classes is None or len(labels) != len(info.classes)):
        expected = "no classes" if info.classes is None else f"{len(info.classes)} classes"
        raise InvalidInput(f"{len(labels)} labels given, but the estimator has {expected}")
    return _Prepared(spec=spec, info=info, feature_names=names, labels=labels)


def _create_model(session: Session, name: str, *, description: str, tags: dict[str, str], actor: str) -> Model:
    if not MODEL_NAME.match(name):
        raise InvalidInput(f"invalid model name {name!r}", errors={"name": name})
    model = Model(name=name, description=description, tags=tags)
    session.add(model)
    session.flush()
    _record(session, name, "model.created", actor, after={"description": description, "tags": tags})
    return model


def _add_version(
    session: Session, model: Model, prepared: _Prepared, sha256: str, size: int, *, actor: str
) -> ModelVersion:
    # One UPDATE ... RETURNING allocates the number atomically on SQLite and PostgreSQL alike.
    number = session.execute(
        update(Model)
        .where(Model.id == model.id)
        .values(last_version=Model.last_version + 1)
        .returning(Model.last_version)
    ).scalar_one()
    spec, info = prepared.spec, prepared.info
    version = ModelVersion(
        model_id=model.id,
        version=number,
        sha256=sha256,
        size_bytes=size,
        format=spec.fmt,
        estimator=info.estimator,
        n_features=len(prepared.feature_names),
        feature_names=prepared.feature_names,
        feature_aliases=dict(spec.feature_aliases),
        classes=info.classes,
        labels=prepared.labels,
        has_proba=info.has_proba,
        input_kind="array",
        library_versions=introspect.library_versions(),
        description=spec.description,
        metrics=dict(spec.metrics),
        params=dict(spec.params),
        tags=dict(spec.tags),
        created_by=actor,
    )
    session.add(version)
    session.flush()
    _record(session, model.name, "version.created", actor, version=number,
            after={"sha256": sha256, "estimator": info.estimator})
    return version


def _set_alias(session: Session, model: Model, name: str, version: ModelVersion, *, actor: str) -> None:
    alias = session.scalar(select(Alias).where(Alias.model_id == model.id, Alias.name == name))
    before = None
    if alias is None:
        session.add(Alias(model_id=model.id, name=name, version_id=version.id))
    else:
        before = {"version": alias.target.version}
        alias.version_id = version.id
    session.flush()
    _record(session, model.name, "alias.set" if before is None else "alias.moved", actor,
            version=version.version, before=before, after={"alias": name, "version": version.version})


def _record(
    session: Session, model_name: str, action: str, actor: str, *, version: int | None = None,
    before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
) -> None:
    session.add(Event(model_name=model_name, version=version, action=action, actor=actor,
                      before=before, after=after))
