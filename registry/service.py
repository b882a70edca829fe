"""Registry write use cases for models and versions. Plain functions: a Session (and a store)
first, plain values after.

Each is one transaction with one commit (``writes.write``); aliases are ``aliases``' use cases,
the reads are in ``queries``, the ref grammar in ``refs``, upload preparation in ``upload``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from modelyard.registry import introspect, sandbox, writes
from modelyard.registry.aliases import move
from modelyard.registry.db import utcnow
from modelyard.registry.errors import ModelExists, VersionInUse
from modelyard.registry.maintenance import discard_unreferenced
from modelyard.registry.models import Alias, Guard, Model, ModelTag, ModelVersion, Shadow
from modelyard.registry.queries import ModelView, VersionView, aliases_of, model_detail, model_exists, version_detail
from modelyard.registry.refs import (
    DEFAULT_ALIAS,
    get_model,
    resolve_version,
    validate_model_name,
)
from modelyard.registry.storage import ArtifactStore, Data
from modelyard.registry.upload import Prepared, VersionSpec, prepare_version


@dataclass(frozen=True)
class RemovedVersion:
    """What a delete took away, so callers can drop it from caches."""

    name: str
    version: int
    sha256: str


def create_model(
    session: Session, name: str, *, description: str = "", tags: dict[str, str] | None = None,
    actor: str = "anonymous",
) -> ModelView:
    """Create an empty model. Raises ModelExists (409) or InvalidName (422)."""
    validate_model_name(name)

    def write() -> None:
        if model_exists(session, name):
            raise ModelExists(name)
        _create_model(session, name, description=description, tags=tags or {}, actor=actor)

    writes.write(session, write, on_conflict=lambda: ModelExists(name))
    return model_detail(session, name)


def update_model(
    session: Session, name: str, *, description: str | None = None, tags: dict[str, str] | None = None,
    actor: str = "anonymous",
) -> ModelView:
    """Change a model's description and/or tags (tags are replaced whole)."""

    def write() -> None:
        model = get_model(session, name)
        before = {"description": model.description, "tags": model.tags}
        if description is not None:
            model.description = description
        if tags is not None:
            _set_tags(session, model, tags)
        model.updated_at = utcnow()
        writes.record(session, name, "model.updated", actor, before=before,
                after={"description": model.description, "tags": model.tags})

    writes.write(session, write)
    return model_detail(session, name)


def delete_model(session: Session, store: ArtifactStore, name: str, *,
                 actor: str = "anonymous") -> list[RemovedVersion]:
    """Delete a model, its versions and aliases; artifacts no other version uses are removed."""

    def write() -> list[RemovedVersion]:
        model = get_model(session, name)
        versions = list(session.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id)))
        before = {"versions": [v.version for v in versions], "aliases": aliases_of(session, model)}
        session.execute(delete(Alias).where(Alias.model_id == model.id))
        session.execute(delete(ModelVersion).where(ModelVersion.model_id == model.id))
        session.execute(delete(Model).where(Model.id == model.id))
        writes.record(session, name, "model.deleted", actor, before=before)
        return [RemovedVersion(name, v.version, v.sha256) for v in versions]

    removed = writes.write(session, write)
    discard_unreferenced(session, store, {r.sha256 for r in removed})
    return removed


def register_version(
    session: Session, store: ArtifactStore, name: str, data: Data, spec: VersionSpec, *,
    actor: str = "anonymous", limits: sandbox.Limits | None = None,
) -> VersionView:
    """Store ``data`` as the next version of ``name`` (created if missing); one transaction.
    Returns the new version's detail.

    The artifact is scanned, then trial-loaded, inspected and made to predict one row in a
    child process under ``limits``, before anything is stored; the blob is
    in place before the row commits, and removed again if the commit fails. Version numbers
    are allocated atomically: concurrent uploads get consecutive numbers, never the same one.
    Raises UnsafeArtifact / InvalidArtifact / InvalidInput / InvalidName (422).
    """
    validate_model_name(name)
    prepared = prepare_version(data, spec, limits=limits or sandbox.Limits())
    sha256 = store.put(data)

    def write() -> int:
        model = session.scalar(select(Model).where(Model.name == name))
        if model is None:
            model = _create_model(session, name, description="", tags={}, actor=actor)
        return _add_version(session, model, prepared, sha256, len(data), actor=actor).version

    try:
        number = writes.write(session, write)
    except BaseException:
        discard_unreferenced(session, store, {sha256})
        raise
    if not store.exists(sha256):
        # A concurrent failed upload of the same bytes removed the blob between our put and
        # our commit; put it back so the committed row never points at nothing.
        store.put(data)
    return version_detail(session, name, str(number))


def update_version(
    session: Session, name: str, ref: str, *, description: str | None = None,
    tags: dict[str, str] | None = None, actor: str = "anonymous",
) -> VersionView:
    """Change a version's description and/or tags: the only mutable parts of a version."""

    def write() -> int:
        version = resolve_version(session, name, ref)
        before = {"description": version.description, "tags": version.tags}
        if description is not None:
            version.description = description
        if tags is not None:
            version.tags = dict(tags)
        writes.record(session, name, "version.updated", actor, version=version.version, before=before,
                after={"description": version.description, "tags": version.tags})
        return version.version

    return version_detail(session, name, str(writes.write(session, write)))


def delete_version(
    session: Session, store: ArtifactStore, name: str, ref: str, *, actor: str = "anonymous"
) -> RemovedVersion:
    """Delete a version. Raises VersionInUse (409) while an alias points at it.

    Its number is never reused; its artifact is removed unless another version uses it.
    """

    def write() -> RemovedVersion:
        version = resolve_version(session, name, ref)
        pointing = sorted(
            alias.name for alias in session.scalars(select(Alias).where(Alias.model_id == version.model_id))
            if alias.version_id == version.id or str(version.version) in (alias.weights or {}))
        pointing += sorted(f"{alias} (as its shadow)" for alias in session.scalars(
            select(Alias.name).join(Shadow, Shadow.alias_id == Alias.id).where(Shadow.version_id == version.id)))
        pointing += sorted(f"{alias} (as the state its guard returns to)" for alias, baseline in session.execute(
            select(Alias.name, Guard.baseline).join(Guard, Guard.alias_id == Alias.id)
            .where(Alias.model_id == version.model_id))
            if baseline.get("version") == version.version or str(version.version) in baseline.get("weights", {}))
        if pointing:
            raise VersionInUse(name, version.version, pointing)
        session.execute(delete(ModelVersion).where(ModelVersion.id == version.id))
        session.execute(update(Model).where(Model.id == version.model_id).values(version_count=Model.version_count - 1))
        writes.record(session, name, "version.deleted", actor, version=version.version,
                before={"sha256": version.sha256, "estimator": version.estimator})
        return RemovedVersion(name, version.version, version.sha256)

    removed = writes.write(session, write)
    discard_unreferenced(session, store, {removed.sha256})
    return removed


def seed_model(
    session: Session, store: ArtifactStore, name: str, data: bytes, spec: VersionSpec, *,
    description: str = "", alias: str = DEFAULT_ALIAS, actor: str = "modelyard",
) -> bool:
    """Register ``data`` as version 1 of a new model ``name`` with ``alias``, unless it exists.

    Idempotent and safe to race: returns False when the model already exists (also when a
    concurrent process created it first). ``data`` is trusted (modelyard made it), so it is
    inspected in this process rather than in a sandbox.
    """
    if model_exists(session, name):
        return False
    prepared = prepare_version(data, spec, limits=None)
    sha256 = store.put(data)

    def write() -> bool:
        if model_exists(session, name):
            return False
        model = _create_model(session, name, description=description, tags={}, actor=actor)
        version = _add_version(session, model, prepared, sha256, len(data), actor=actor)
        move(session, model, alias, version, actor=actor)
        return True

    try:
        return writes.write(session, write)
    except BaseException:
        discard_unreferenced(session, store, {sha256})
        raise


def _create_model(session: Session, name: str, *, description: str, tags: dict[str, str], actor: str) -> Model:
    model = Model(name=name, description=description)
    session.add(model)
    session.flush()
    _set_tags(session, model, tags)
    writes.record(session, name, "model.created", actor, after={"description": description, "tags": tags})
    return model


def _set_tags(session: Session, model: Model, tags: dict[str, str]) -> None:
    """Replace a model's tags: the object the API shows and the indexed rows the list filters on."""
    model.tags = dict(tags)
    session.execute(delete(ModelTag).where(ModelTag.model_id == model.id))
    session.add_all(ModelTag(model_id=model.id, key=k, value=v) for k, v in tags.items())


def _add_version(
    session: Session, model: Model, prepared: Prepared, sha256: str, size: int, *, actor: str
) -> ModelVersion:
    # One UPDATE ... RETURNING allocates the number atomically on SQLite and PostgreSQL alike.
    number = session.execute(
        update(Model)
        .where(Model.id == model.id)
        .values(last_version=Model.last_version + 1, version_count=Model.version_count + 1, updated_at=utcnow())
        .returning(Model.last_version)
    ).scalar_one()
    spec, info = prepared.spec, prepared.info
    version = ModelVersion(
        model_id=model.id,
        version=number,
        sha256=sha256,
        size_bytes=size,
        format=prepared.fmt,
        estimator=info.estimator,
        n_features=len(prepared.feature_names),
        feature_names=prepared.feature_names,
        feature_aliases=dict(spec.feature_aliases),
        classes=info.classes,
        labels=prepared.labels,
        has_proba=info.has_proba,
        input_kind=info.input_kind,
        feature_types=info.feature_types,
        library_versions={**introspect.library_versions(),
                          **({"sklearn_pickled": info.pickled_with} if info.pickled_with else {})},
        example=spec.example,
        example_predictions=info.example_predictions,
        profile=prepared.profile,
        explainable=prepared.info.explainable,
        unexplainable=prepared.info.unexplainable,
        load_warnings=list(info.load_warnings),
        allow_nan=info.allow_nan,
        description=spec.description,
        metrics=dict(spec.metrics),
        params=dict(spec.params),
        tags=dict(spec.tags),
        created_by=actor,
    )
    session.add(version)
    session.flush()
    writes.record(session, model.name, "version.created", actor, version=number,
            after={"sha256": sha256, "estimator": info.estimator, "format": prepared.fmt})
    return version
