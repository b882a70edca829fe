"""Registry use cases. Plain functions: a Session (and a store) first, plain values after.

Read functions never commit; each write use case is one transaction with one commit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelyard.registry import introspect, safety, sandbox
from modelyard.registry.db import begin_write, utcnow
from modelyard.registry.errors import (
    AliasNotFound,
    InvalidInput,
    InvalidName,
    ModelExists,
    ModelNotFound,
    NoRollbackHistory,
    VersionInUse,
    VersionNotFound,
)
from modelyard.registry.models import Alias, Event, Model, ModelVersion, RegistryState
from modelyard.registry.storage import ArtifactStore

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
    found: ModelVersion = _resolve(session, select(ModelVersion), name, ref)
    return found


def resolve_version_key(session: Session, name: str, ref: str) -> tuple[int, str]:
    """``(version number, sha256)`` for a ref: the same lookup as :func:`resolve_version`
    without loading the row, for the predict path."""
    number, sha256 = _resolve(session, select(ModelVersion.version, ModelVersion.sha256), name, ref, scalar=False)
    return number, sha256


def _resolve(session: Session, query: Any, name: str, ref: str, *, scalar: bool = True) -> Any:
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


def load_estimator(store: ArtifactStore, version: ModelVersion, *,
                   extra: frozenset[str] = frozenset()) -> safety.Loaded:
    """Read the version's artifact (digest checked) and unpickle it through the safety gate,
    with the warnings loading raised."""
    return safety.load_recorded(store.open(version.sha256), version.format, extra=extra)


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
            "input_kind": v.input_kind,
            "feature_types": v.feature_types,
            "library_versions": v.library_versions,
            "allow_nan": v.allow_nan,
            "example": v.example,
            "load_warnings": v.load_warnings,
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

ALIAS_NAME = MODEL_NAME
_ATTEMPTS = 3  # a write that lost a uniqueness race (two creators of one model) is retried


@dataclass
class VersionSpec:
    """What the uploader says about a version; everything else is read off the estimator."""

    fmt: str | None = None  # None: detected from the content
    description: str = ""
    feature_names: Sequence[str] | None = None
    feature_aliases: dict[str, str] = field(default_factory=dict)
    labels: Sequence[Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    example: Any = None  # rows or records for the trial predict, kept with the version


@dataclass(frozen=True)
class AliasMove:
    alias: str
    version: int
    previous_version: int | None


@dataclass(frozen=True)
class RemovedVersion:
    """What a delete took away, so callers can drop it from caches."""

    name: str
    version: int
    sha256: str


@dataclass(frozen=True)
class Artifact:
    sha256: str
    filename: str
    data: bytes | None  # None when the caller already holds this sha256


def validate_alias_name(alias: str) -> None:
    """Raise InvalidName for a malformed or reserved alias (``latest``, ``3``, ``v3``)."""
    if not ALIAS_NAME.match(alias):
        raise InvalidName("alias", alias, "use letters, digits, '.', '_' and '-' (at most 128)")
    if alias.lower() == LATEST or parse_version_ref(alias) is not None:
        raise InvalidName("alias", alias, "'latest', numbers and v<number> are reserved for versions")


def create_model(
    session: Session, name: str, *, description: str = "", tags: dict[str, str] | None = None,
    actor: str = "anonymous",
) -> dict[str, Any]:
    """Create an empty model. Raises ModelExists (409) or InvalidName (422)."""
    _validate_model_name(name)

    def write() -> None:
        if model_exists(session, name):
            raise ModelExists(name)
        _create_model(session, name, description=description, tags=tags or {}, actor=actor)

    _write(session, write, on_conflict=lambda: ModelExists(name))
    return model_detail(session, name)


def update_model(
    session: Session, name: str, *, description: str | None = None, tags: dict[str, str] | None = None,
    actor: str = "anonymous",
) -> dict[str, Any]:
    """Change a model's description and/or tags (tags are replaced whole)."""

    def write() -> None:
        model = get_model(session, name)
        before = {"description": model.description, "tags": model.tags}
        if description is not None:
            model.description = description
        if tags is not None:
            model.tags = dict(tags)
        model.updated_at = utcnow()
        _record(session, name, "model.updated", actor, before=before,
                after={"description": model.description, "tags": model.tags})

    _write(session, write)
    return model_detail(session, name)


def delete_model(session: Session, store: ArtifactStore, name: str, *,
                 actor: str = "anonymous") -> list[RemovedVersion]:
    """Delete a model, its versions and aliases; artifacts no other version uses are removed."""
    removed: list[RemovedVersion] = []

    def write() -> None:
        removed.clear()
        model = get_model(session, name)
        versions = list(session.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id)))
        removed.extend(RemovedVersion(name, v.version, v.sha256) for v in versions)
        before = {"versions": [v.version for v in versions], "aliases": aliases_of(session, model)}
        session.execute(delete(Alias).where(Alias.model_id == model.id))
        session.execute(delete(ModelVersion).where(ModelVersion.model_id == model.id))
        session.execute(delete(Model).where(Model.id == model.id))
        _record(session, name, "model.deleted", actor, before=before)

    _write(session, write)
    _collect_garbage(session, store, {r.sha256 for r in removed})
    return removed


def register_version(
    session: Session, store: ArtifactStore, name: str, data: bytes, spec: VersionSpec, *,
    actor: str = "anonymous", limits: sandbox.Limits | None = None,
) -> dict[str, Any]:
    """Store ``data`` as the next version of ``name`` (created if missing); one transaction.
    Returns the new version's detail.

    The artifact is scanned, then trial-loaded, inspected and made to predict one row in a
    child process under ``limits``, before anything is stored; the blob is
    in place before the row commits, and removed again if the commit fails. Version numbers
    are allocated atomically: concurrent uploads get consecutive numbers, never the same one.
    Raises UnsafeArtifact / InvalidArtifact / InvalidInput / InvalidName (422).
    """
    _validate_model_name(name)
    prepared = _prepare_version(data, spec, limits=limits or sandbox.Limits())
    sha256 = store.put(data)
    created: list[int] = []

    def write() -> None:
        created.clear()
        model = session.scalar(select(Model).where(Model.name == name))
        if model is None:
            model = _create_model(session, name, description="", tags={}, actor=actor)
        created.append(_add_version(session, model, prepared, sha256, len(data), actor=actor).version)

    try:
        _write(session, write)
    except BaseException:
        _discard_if_unreferenced(session, store, sha256)
        raise
    if not store.exists(sha256):
        # A concurrent failed upload of the same bytes removed the blob between our put and
        # our commit; put it back so the committed row never points at nothing.
        store.put(data)
    return version_detail(session, name, str(created[0]))


def update_version(
    session: Session, name: str, ref: str, *, description: str | None = None,
    tags: dict[str, str] | None = None, actor: str = "anonymous",
) -> dict[str, Any]:
    """Change a version's description and/or tags: the only mutable parts of a version."""
    number: list[int] = []

    def write() -> None:
        number.clear()
        version = resolve_version(session, name, ref)
        number.append(version.version)
        before = {"description": version.description, "tags": version.tags}
        if description is not None:
            version.description = description
        if tags is not None:
            version.tags = dict(tags)
        _record(session, name, "version.updated", actor, version=version.version, before=before,
                after={"description": version.description, "tags": version.tags})

    _write(session, write)
    return version_detail(session, name, str(number[0]))


def delete_version(
    session: Session, store: ArtifactStore, name: str, ref: str, *, actor: str = "anonymous"
) -> RemovedVersion:
    """Delete a version. Raises VersionInUse (409) while an alias points at it.

    Its number is never reused; its artifact is removed unless another version uses it.
    """
    removed: list[RemovedVersion] = []

    def write() -> None:
        removed.clear()
        version = resolve_version(session, name, ref)
        pointing = list(session.scalars(select(Alias.name).where(Alias.version_id == version.id).order_by(Alias.name)))
        if pointing:
            raise VersionInUse(name, version.version, pointing)
        removed.append(RemovedVersion(name, version.version, version.sha256))
        session.execute(delete(ModelVersion).where(ModelVersion.id == version.id))
        _record(session, name, "version.deleted", actor, version=version.version,
                before={"sha256": version.sha256, "estimator": version.estimator})

    _write(session, write)
    _collect_garbage(session, store, {removed[0].sha256})
    return removed[0]


_EXTENSIONS = {"pickle": "pkl", "joblib": "joblib", "skops": "skops"}


def get_artifact(
    session: Session, store: ArtifactStore, name: str, ref: str, *, if_none_match: Sequence[str] = ()
) -> Artifact:
    """A version's stored bytes (digest checked); ``data`` is None when ``if_none_match``
    already names its sha256."""
    version = resolve_version(session, name, ref)
    filename = f"{name}-v{version.version}.{_EXTENSIONS[version.format]}"
    if version.sha256 in if_none_match or "*" in if_none_match:
        return Artifact(version.sha256, filename, None)
    return Artifact(version.sha256, filename, store.open(version.sha256))


def set_alias(session: Session, name: str, alias: str, ref: str, *, actor: str = "anonymous") -> AliasMove:
    """Point ``alias`` at the version ``ref`` names (create or move it); one transaction.

    Raises InvalidName (422) for a reserved or malformed alias, ModelNotFound /
    VersionNotFound (404).
    """
    validate_alias_name(alias)
    moves: list[AliasMove] = []

    def write() -> None:
        moves.clear()
        version = resolve_version(session, name, ref)
        moves.append(_set_alias(session, version.model, alias, version, actor=actor))

    _write(session, write)
    return moves[0]


def promote(session: Session, name: str, ref: str, alias: str = "production", *, actor: str = "anonymous") -> AliasMove:
    """Move ``alias`` (default ``production``) to the version ``ref`` names; returns the
    version it pointed at before (None when the alias is new)."""
    return set_alias(session, name, alias, ref, actor=actor)


def delete_alias(session: Session, name: str, alias: str, *, actor: str = "anonymous") -> None:
    """Remove an alias. Raises AliasNotFound (404)."""

    def write() -> None:
        model = get_model(session, name)
        row = session.scalar(select(Alias).where(Alias.model_id == model.id, Alias.name == alias))
        if row is None:
            raise AliasNotFound(name, alias)
        previous = row.target.version
        session.delete(row)
        _record(session, name, "alias.removed", actor, version=previous, alias=alias,
                before={"version": previous})

    _write(session, write)


def rollback_alias(session: Session, name: str, alias: str, *, actor: str = "anonymous") -> AliasMove:
    """Move ``alias`` back to where it pointed before its last move, read from the event log.

    A second rollback undoes the first. Raises AliasNotFound (404), NoRollbackHistory (409)
    when the alias has never moved or its previous version was deleted.
    """
    moves: list[AliasMove] = []

    def write() -> None:
        moves.clear()
        model = get_model(session, name)
        row = session.scalar(select(Alias).where(Alias.model_id == model.id, Alias.name == alias))
        if row is None:
            raise AliasNotFound(name, alias)
        last = session.scalar(
            select(Event)
            .where(Event.model_name == name, Event.alias == alias,
                   Event.action.in_(("alias.set", "alias.moved", "alias.rolled_back")))
            .order_by(Event.id.desc())
            .limit(1)
        )
        previous = (last.before or {}).get("version") if last is not None else None
        if previous is None:
            raise NoRollbackHistory(name, alias, "it has never moved")
        target = session.scalar(
            select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == previous)
        )
        if target is None:
            raise NoRollbackHistory(name, alias, f"its previous version {previous} was deleted")
        moves.append(_set_alias(session, model, alias, target, actor=actor, action="alias.rolled_back"))

    _write(session, write)
    return moves[0]


def list_events(session: Session, name: str, *, offset: int = 0, limit: int = 10) -> tuple[list[dict[str, Any]], int]:
    """A model's audit history, newest first. History outlives a deleted model; a name that
    never had any raises ModelNotFound."""
    total = session.scalar(select(func.count()).where(Event.model_name == name)) or 0
    if total == 0:
        get_model(session, name)
    events = session.scalars(
        select(Event).where(Event.model_name == name).order_by(Event.id.desc()).offset(offset).limit(limit)
    )
    return [
        {"id": e.id, "model": e.model_name, "action": e.action, "version": e.version, "alias": e.alias,
         "actor": e.actor, "at": e.at, "before": e.before, "after": e.after}
        for e in events
    ], total


def seed_model(
    session: Session, store: ArtifactStore, name: str, data: bytes, spec: VersionSpec, *,
    description: str = "", alias: str = "production", actor: str = "modelyard",
) -> bool:
    """Register ``data`` as version 1 of a new model ``name`` with ``alias``, unless it exists.

    Idempotent and safe to race: returns False when the model already exists (also when a
    concurrent process created it first). ``data`` is trusted (modelyard made it), so it is
    inspected in this process rather than in a sandbox.
    """
    if model_exists(session, name):
        return False
    prepared = _prepare_version(data, spec, limits=None)
    sha256 = store.put(data)
    created: list[bool] = []

    def write() -> None:
        created.clear()
        if model_exists(session, name):
            return
        model = _create_model(session, name, description=description, tags={}, actor=actor)
        version = _add_version(session, model, prepared, sha256, len(data), actor=actor)
        _set_alias(session, model, alias, version, actor=actor)
        created.append(True)

    try:
        _write(session, write)
    except BaseException:
        _discard_if_unreferenced(session, store, sha256)
        raise
    return bool(created)


# --- steps -------------------------------------------------------------------------------------


def _write(session: Session, step: Callable[[], None], *, on_conflict: Callable[[], Exception] | None = None) -> None:
    """Run ``step`` in one write transaction and commit; roll back on any error.

    A uniqueness race lost to a concurrent writer (IntegrityError) is retried from the start,
    where ``step`` sees the winner's row; ``on_conflict`` turns the last failure into a domain
    error.
    """
    for attempt in range(_ATTEMPTS):
        begin_write(session)
        try:
            step()
            session.execute(update(RegistryState).values(generation=RegistryState.generation + 1))
            session.commit()
            return
        except IntegrityError:
            session.rollback()
            if attempt == _ATTEMPTS - 1:
                if on_conflict is not None:
                    raise on_conflict() from None
                raise
        except BaseException:
            session.rollback()
            raise


def _validate_model_name(name: str) -> None:
    if not MODEL_NAME.match(name):
        raise InvalidName("model", name,
                          "start with a letter or digit; then letters, digits, '.', '_', '-' (at most 128)")


def _collect_garbage(session: Session, store: ArtifactStore, digests: set[str]) -> None:
    for sha256 in digests:
        _discard_if_unreferenced(session, store, sha256)


def _discard_if_unreferenced(session: Session, store: ArtifactStore, sha256: str) -> None:
    """Remove a blob no committed row points at (a failed commit must not leave an orphan)."""
    session.rollback()
    if session.scalar(select(ModelVersion.id).where(ModelVersion.sha256 == sha256).limit(1)) is None:
        store.delete(sha256)
    session.rollback()


@dataclass(frozen=True)
class _Prepared:
    fmt: str
    spec: VersionSpec
    info: introspect.EstimatorInfo
    feature_names: list[str]
    labels: list[Any] | None


def _prepare_version(data: bytes, spec: VersionSpec, *, limits: sandbox.Limits | None) -> _Prepared:
    """Scan, load and inspect an artifact, and check what the uploader said against it.

    ``limits`` None is for trusted bytes only: they are loaded in this process.
    """
    fmt = safety.resolve_format(data, spec.fmt)
    extra = (limits or sandbox.Limits()).extra_globals
    # Cheap, and refuses hostile files before a child is started.
    if fmt == "skops":
        safety.check_skops(data, extra=extra)
    else:
        safety.scan(data, fmt, max_expanded_bytes=(limits or sandbox.Limits()).max_expanded_bytes, extra=extra)
    trial = sandbox.Trial(list(spec.feature_names) if spec.feature_names is not None else None,
                          dict(spec.feature_aliases), spec.example)
    if limits is None:
        info = sandbox.trial(data, fmt, trial)
    else:
        info = sandbox.inspect_artifact(data, fmt, spec=trial, limits=limits)
    names = _feature_names(spec, info)
    unknown_targets = sorted({t for t in spec.feature_aliases.values() if t not in names})
    if unknown_targets:
        raise InvalidInput(
            f"feature aliases point at unknown features: {', '.join(unknown_targets)}",
            errors={"feature_aliases": unknown_targets},
        )
    clashing = sorted(a for a in spec.feature_aliases if a in names)
    if clashing:
        raise InvalidInput(f"feature aliases must not be feature names: {', '.join(clashing)}",
                           errors={"feature_aliases": clashing})
    labels = list(spec.labels) if spec.labels is not None else None
    if labels is not None and info.classes and isinstance(info.classes[0], list):
        raise InvalidInput("labels are for single-output classifiers; this estimator has "
                           f"{len(info.classes)} outputs", errors={"labels": labels})
    if labels is not None and (info.classes is None or len(labels) != len(info.classes)):
        expected = "no classes" if info.classes is None else f"{len(info.classes)} classes"
        raise InvalidInput(f"{len(labels)} labels given, but the estimator has {expected}",
                           errors={"labels": labels})
    return _Prepared(fmt=fmt, spec=spec, info=info, feature_names=names, labels=labels)


def _feature_names(spec: VersionSpec, info: introspect.EstimatorInfo) -> list[str]:
    given = list(spec.feature_names) if spec.feature_names is not None else None
    if given is not None and len(set(given)) != len(given):
        raise InvalidInput("feature names must be unique", errors={"features": given})
    if given is not None and info.feature_names is not None and given != info.feature_names:
        raise InvalidInput(
            "the feature names given differ from those the estimator was fitted with "
            f"({', '.join(info.feature_names)})",
            errors={"features": given, "expected": info.feature_names},
        )
    names = given if given is not None else info.feature_names
    if names is None:
        if info.n_features is None:
            raise InvalidInput("the estimator does not record its number of features; give feature names",
                               errors={"features": None})
        names = [f"x{i}" for i in range(info.n_features)]
    if info.n_features is not None and len(names) != info.n_features:
        raise InvalidInput(
            f"{len(names)} feature names given, but the estimator takes {info.n_features} features",
            errors={"features": names},
        )
    if not names:
        raise InvalidInput("a model needs at least one feature", errors={"features": names})
    return names


def _create_model(session: Session, name: str, *, description: str, tags: dict[str, str], actor: str) -> Model:
    model = Model(name=name, description=description, tags=dict(tags))
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
        .values(last_version=Model.last_version + 1, updated_at=utcnow())
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
    _record(session, model.name, "version.created", actor, version=number,
            after={"sha256": sha256, "estimator": info.estimator, "format": prepared.fmt})
    return version


def _set_alias(
    session: Session, model: Model, name: str, version: ModelVersion, *, actor: str,
    action: str | None = None,
) -> AliasMove:
    alias = session.scalar(select(Alias).where(Alias.model_id == model.id, Alias.name == name))
    previous = None
    if alias is None:
        session.add(Alias(model_id=model.id, name=name, version_id=version.id))
    else:
        previous = alias.target.version
        alias.version_id = version.id
        alias.updated_at = utcnow()
    session.flush()
    action = action or ("alias.set" if alias is None else "alias.moved")
    _record(session, model.name, action, actor, version=version.version, alias=name,
            before=None if previous is None else {"version": previous},
            after={"version": version.version})
    return AliasMove(name, version.version, previous)


def _record(
    session: Session, model_name: str, action: str, actor: str, *, version: int | None = None,
    alias: str | None = None, before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
) -> None:
    session.add(Event(model_name=model_name, version=version, alias=alias, action=action, actor=actor,
                      before=before, after=after))
