"""The registry's read side: models, versions, aliases, events and artifacts as the API shows
them, and a version's estimator loaded through the safety gate. Nothing here writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from modelyard.registry import safety
from modelyard.registry.guards import rule_of
from modelyard.registry.models import Alias, Event, Guard, Model, ModelTag, ModelVersion
from modelyard.registry.refs import get_model, resolve_version
from modelyard.registry.storage import ArtifactStore, Data

T = TypeVar("T")


def model_exists(session: Session, name: str) -> bool:
    return session.scalar(select(Model.id).where(Model.name == name)) is not None


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its items, how many match in all, and the keyset key the next page
    starts after (None on the last page). A page read by key costs the same deep in the list as
    at its start, and is not counted (``total`` None: a count reads every matching row); one
    read by offset costs more the deeper it goes."""

    items: list[T]
    total: int | None
    next_key: str | int | None


def list_models(
    session: Session, *, q: str | None = None, tag: tuple[str, str] | None = None,
    offset: int = 0, limit: int = 10, after: str | None = None,
) -> Page[ModelView]:
    """Models ordered by name, filtered by a name substring (any case) and one ``key:value``
    tag; the page is ``limit`` models from ``offset``, or after the name ``after``."""
    conditions: list[ColumnElement[bool]] = []
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(Model.name.ilike(f"%{escaped}%", escape="\\"))
    if tag is not None:
        key, value = tag
        conditions.append(Model.id.in_(select(ModelTag.model_id).where(ModelTag.key == key, ModelTag.value == value)))
    total = None if after is not None else session.scalar(select(func.count()).select_from(Model).where(*conditions))
    query = select(Model).where(*conditions).order_by(Model.name)
    models: list[Model] = _page(session, query, Model.name > after if after is not None else None, offset, limit)
    next_key = models[limit - 1].name if len(models) > limit else None
    return Page(describe_models(session, models[:limit]), total, next_key)


def list_versions(
    session: Session, name: str, *, offset: int = 0, limit: int = 10, before: int | None = None
) -> Page[VersionView]:
    """A model's versions, newest first: ``limit`` of them from ``offset``, or below the
    version number ``before``."""
    model = get_model(session, name)
    total = model.version_count
    query = select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(ModelVersion.version.desc())
    keyset = ModelVersion.version < before if before is not None else None
    versions: list[ModelVersion] = _page(session, query, keyset, offset, limit)
    next_key = versions[limit - 1].version if len(versions) > limit else None
    return Page(describe_versions(session, name, versions[:limit]), total, next_key)


def _page(session: Session, query: Select[Any], keyset: ColumnElement[bool] | None, offset: int,
          limit: int) -> list[Any]:
    """The page's rows and one more (whether a next page exists, without a second query)."""
    query = query.where(keyset) if keyset is not None else query.offset(offset)
    return list(session.scalars(query.limit(limit + 1)))


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


@dataclass(frozen=True)
class ModelView:
    """A model as the API shows it."""

    name: str
    description: str
    tags: dict[str, str]
    latest_version: int | None
    version_count: int
    aliases: dict[str, int]
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class VersionView:
    """A version as the API shows it: the stored row (whose columns are read through the view,
    so the fields are listed once, in the model and the schema), its model's name, the aliases
    pointing at it, and what the answering process's cache says of it (detail only)."""

    name: str
    row: ModelVersion
    aliases: list[str]
    serving: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, attr: str) -> Any:  # only for names the view does not define
        if attr in ("row", "serving") or attr.startswith("__"):
            raise AttributeError(attr)
        if attr in self.serving:
            return self.serving[attr]
        return getattr(self.row, attr)

    @property
    def metadata(self) -> dict[str, Any]:
        return {"metrics": self.row.metrics, "params": self.row.params}

    @property
    def load_warnings(self) -> list[str]:
        """The upload's warnings, then those this process's load raised beyond them."""
        recorded = list(self.row.load_warnings)
        return recorded + [w for w in self.serving.get("serving_load_warnings", ()) if w not in recorded]


def describe_models(session: Session, models: Sequence[Model]) -> list[ModelView]:
    """API views of ``models`` (aliases, latest version, count) in two queries, not 2N."""
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
    # One index lookup per model (its highest version), never a count of its versions: the
    # count is kept on the model row.
    latest: dict[int, int | None] = {model_id: number for model_id, number in session.execute(
        select(Model.id, select(func.max(ModelVersion.version)).where(ModelVersion.model_id == Model.id)
               .scalar_subquery())
        .where(Model.id.in_(ids))
    )}
    views = []
    for m in models:
        views.append(ModelView(m.name, m.description, m.tags, latest[m.id], m.version_count, aliases[m.id],
                               m.created_at, m.updated_at))
    return views


def model_detail(session: Session, name: str) -> ModelView:
    return describe_models(session, [get_model(session, name)])[0]


def describe_versions(session: Session, name: str, versions: Sequence[ModelVersion]) -> list[VersionView]:
    """API views of versions of one model, each with the aliases that point at it."""
    pointing: dict[int, list[str]] = {}
    if versions:
        for alias, version_id in session.execute(
            select(Alias.name, Alias.version_id)
            .where(Alias.version_id.in_([v.id for v in versions]))
            .order_by(Alias.name)
        ):
            pointing.setdefault(version_id, []).append(alias)
    return [VersionView(name, v, pointing.get(v.id, [])) for v in versions]


def version_detail(session: Session, name: str, ref: str) -> VersionView:
    return describe_versions(session, name, [resolve_version(session, name, ref)])[0]


def version_numbers(session: Session, name: str) -> list[int]:
    """A model's version numbers, oldest first."""
    model = get_model(session, name)
    return list(session.scalars(select(ModelVersion.version).where(ModelVersion.model_id == model.id)
                                .order_by(ModelVersion.version)))


def model_aliases(session: Session, name: str) -> dict[str, int | dict[str, Any]]:
    """``{alias: version}``, a weighted alias as ``{alias: {"weights": {...}}}`` (with its
    ``guard`` rule when it has one)."""
    model = get_model(session, name)
    rows = session.execute(
        select(Alias.name, ModelVersion.version, Alias.weights, Guard)
        .join(ModelVersion, Alias.version_id == ModelVersion.id)
        .outerjoin(Guard, Guard.alias_id == Alias.id)
        .where(Alias.model_id == model.id)
        .order_by(Alias.name)
    )
    found: dict[str, int | dict[str, Any]] = {}
    for alias, version, weights, guard in rows:
        if not weights:
            found[alias] = version
        else:
            found[alias] = {"weights": dict(weights), **({"guard": rule_of(guard)} if guard is not None else {})}
    return found


@dataclass(frozen=True)
class Artifact:
    sha256: str
    filename: str
    data: Data | None  # None when the caller already holds this sha256


def get_artifact(
    session: Session, store: ArtifactStore, name: str, ref: str, *, if_none_match: Sequence[str] = ()
) -> Artifact:
    """A version's stored bytes (digest checked); ``data`` is None when ``if_none_match``
    already names its sha256."""
    version = resolve_version(session, name, ref)
    filename = f"{name}-v{version.version}.{safety.FORMAT_SUFFIXES[version.format]}"
    if version.sha256 in if_none_match or "*" in if_none_match:
        return Artifact(version.sha256, filename, None)
    return Artifact(version.sha256, filename, store.open(version.sha256))


def list_events(
    session: Session, name: str, *, offset: int = 0, limit: int = 10, before: int | None = None
) -> Page[dict[str, Any]]:
    """A model's audit history, newest first: ``limit`` events from ``offset``, or older than
    the event id ``before``. History outlives a deleted model; a name that never had any raises
    ModelNotFound."""
    if before is None:
        total: int | None = session.scalar(select(func.count()).where(Event.model_name == name))
        if not total:
            get_model(session, name)
    else:
        total = None
    query = select(Event).where(Event.model_name == name).order_by(Event.id.desc())
    events: list[Event] = _page(session, query, Event.id < before if before is not None else None, offset, limit)
    if not events and total is None and session.scalar(select(Event.id).where(Event.model_name == name)) is None:
        get_model(session, name)
    return Page([
        {"id": e.id, "model": e.model_name, "action": e.action, "version": e.version, "alias": e.alias,
         "actor": e.actor, "at": e.at, "before": e.before, "after": e.after}
        for e in events[:limit]
    ], total, events[limit - 1].id if len(events) > limit else None)
