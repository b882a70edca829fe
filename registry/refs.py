"""Names and refs: the grammar of model and alias names and of version refs (``3``, ``v3``,
``latest``, an alias), resolving a ref to the version it names, and :class:`RefCache`, the
predict path's resolutions, revalidated on every request by the registry's generation counter
(one primary-key read), so a promotion or rollback committed by any process is seen on the very
next request and nothing stale is ever served.

A ref resolves to one version today; :class:`Resolved` is the value every caller receives, so
that weighted aliases (several targets) change this module and not its callers.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from modelyard.registry import beacon
from modelyard.registry.errors import (
    InvalidName,
    ModelNotFound,
    NoVersions,
    VersionNotFound,
)
from modelyard.registry.fence import SharedRead
from modelyard.registry.models import Alias, Guard, Model, ModelVersion, Shadow
from modelyard.registry.poll import GenerationPoller

DEFAULT_ALIAS = "production"  # what POST /predict serves, what promote moves, what the cache preloads
# A model's default version, where a protocol path names no version (the Open Inference Protocol's
# /v2/models/<name>/...): the production alias when the model has one, else its latest version, as
# Triton and KServe answer for a model's default. No alias or version ref can be spelt this way.
DEFAULT_VERSION = "@default"


class Target(NamedTuple):
    version: int
    sha256: str
    weight: int


class ShadowTarget(NamedTuple):
    """An alias's shadow: which version, for what fraction of the requests (``id``: the shadow's
    own, which its counts are kept under)."""

    id: int
    version: int
    sha256: str
    fraction: float


class GuardTarget(NamedTuple):
    """A weighted alias's guard, as serving needs it: which versions it watches (``candidates``),
    what it measures, and the version a disagreement is measured against (``id``: the guard's
    own, which its counts are kept under)."""

    id: int
    candidates: frozenset[int]
    metric: str
    baseline_version: int
    baseline_sha256: str


class Resolved(NamedTuple):
    """The version a ref names; for a weighted alias also its split (``targets``, weight > 0,
    in version order), from which :meth:`pick` chooses one version per request."""

    version: int
    sha256: str
    targets: tuple[Target, ...] = ()
    alias: str | None = None  # the alias that named it (the OIP's default version: production, when it had it)
    shadow: ShadowTarget | None = None  # the alias's shadow, if it has one
    total: int = 0  # the targets' weights added up (once, not per request)
    guard: GuardTarget | None = None  # the weighted alias's guard, if it has one

    def pick(self, key: str | None) -> tuple[int, str]:
        """``(version, sha256)`` to serve one request: the only version, or one of a split by
        weight: by a hash of ``key`` (the request's ``X-Request-Key``: the same key gets the
        same version on every server for as long as the weights stand), else at random."""
        if not self.targets:
            return self.version, self.sha256
        if key is None:
            point = int(random.random() * self.total)
        else:
            point = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % self.total
        for target in self.targets:
            if point < target.weight:
                return target.version, target.sha256
            point -= target.weight
        raise AssertionError("unreachable: the points cover the weights")


MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


LATEST = "latest"


_VERSION_REF = re.compile(r"^[vV]?([0-9]{1,18})$")


def parse_version_ref(ref: str) -> int | None:
    """The version number a ref names (``3`` or ``v3``), or None when it names an alias."""
    match = _VERSION_REF.match(ref)
    return int(match.group(1)) if match else None


def get_model(session: Session, name: str) -> Model:
    model = session.scalar(select(Model).where(Model.name == name))
    if model is None:
        raise ModelNotFound(name)
    return model


def resolve_version(session: Session, name: str, ref: str) -> ModelVersion:
    """The version a ref names: a number (``3`` or ``v3``), ``latest``, or an alias.

    One indexed query on the success path. Raises :class:`ModelNotFound` or
    :class:`VersionNotFound`.
    """
    found: ModelVersion = _resolve(session, select(ModelVersion), name, ref)
    return found


def resolve_version_key(session: Session, name: str, ref: str) -> Resolved:
    """``(version number, sha256)`` for a ref: the same lookup as :func:`resolve_version`
    without loading the row, for the predict path; a weighted alias's split with it."""
    number, sha256, model_id = _resolve(
        session, select(ModelVersion.version, ModelVersion.sha256, ModelVersion.model_id), name, ref, scalar=False)
    if parse_version_ref(ref) is not None or ref.lower() == LATEST:
        return Resolved(number, sha256)
    alias = DEFAULT_ALIAS if ref == DEFAULT_VERSION else ref
    row = session.execute(select(Alias.id, Alias.weights).where(Alias.model_id == model_id, Alias.name == alias)
                          ).first()
    if row is None:  # the default version of a model without production: its latest
        return Resolved(number, sha256)
    targets: tuple[Target, ...] = ()
    guard = None
    if row.weights:
        shares = {int(n): w for n, w in row.weights.items() if w > 0}
        targets = tuple(Target(v, digest, shares[v]) for v, digest in session.execute(
            select(ModelVersion.version, ModelVersion.sha256).where(
                ModelVersion.model_id == model_id, ModelVersion.version.in_(shares)).order_by(ModelVersion.version)))
        guarded = session.execute(
            select(Guard.id, Guard.candidates, Guard.metric, ModelVersion.version, ModelVersion.sha256)
            .join(ModelVersion, (ModelVersion.model_id == model_id) & (ModelVersion.version == Guard.baseline_version))
            .where(Guard.alias_id == row.id)).first()
        if guarded is not None:
            guard = GuardTarget(guarded.id, frozenset(int(v) for v in guarded.candidates), guarded.metric,
                                guarded.version, guarded.sha256)
    shadow = session.execute(
        select(Shadow.id, ModelVersion.version, ModelVersion.sha256, Shadow.fraction)
        .join(ModelVersion, Shadow.version_id == ModelVersion.id).where(Shadow.alias_id == row.id)).first()
    return Resolved(number, sha256, targets, alias, ShadowTarget(*shadow) if shadow is not None else None,
                    sum(t.weight for t in targets), guard)


def _resolve(session: Session, query: Any, name: str, ref: str, *, scalar: bool = True) -> Any:
    query = query.join(Model, ModelVersion.model_id == Model.id).where(Model.name == name)
    number = parse_version_ref(ref)
    latest = query.order_by(ModelVersion.version.desc()).limit(1)
    if number is not None:
        queries = [query.where(ModelVersion.version == number)]
    elif ref.lower() == LATEST:
        queries = [latest]
    else:
        alias = ref if ref != DEFAULT_VERSION else DEFAULT_ALIAS
        queries = [query.join(Alias, Alias.version_id == ModelVersion.id).where(Alias.name == alias)]
        if ref == DEFAULT_VERSION:
            queries.append(latest)
    for each in queries:
        found = session.scalar(each) if scalar else session.execute(each).first()
        if found is not None:
            return found if scalar else tuple(found)
    get_model(session, name)
    if ref == DEFAULT_VERSION:
        raise NoVersions(name, ref)
    raise VersionNotFound(name, ref, _HINT if ref == DEFAULT_ALIAS else "")


_HINT = f"promote a version to {DEFAULT_ALIAS!r}, or name one: a number or {LATEST!r}"


ALIAS_NAME = MODEL_NAME


def validate_alias_name(alias: str) -> None:
    """Raise InvalidName for a malformed or reserved alias (``latest``, ``3``, ``v3``)."""
    if not ALIAS_NAME.match(alias):
        raise InvalidName("alias", alias, "use letters, digits, '.', '_' and '-' (at most 128)")
    if alias.lower() == LATEST or parse_version_ref(alias) is not None:
        raise InvalidName("alias", alias, "'latest', numbers and v<number> are reserved for versions")


def validate_model_name(name: str) -> None:
    if not MODEL_NAME.match(name):
        raise InvalidName("model", name,
                          "start with a letter or digit; then letters, digits, '.', '_', '-' (at most 128)")


_GENERATION_SQL = "SELECT generation FROM registry_state WHERE id = 1"
_GENERATION_STATEMENT = b"modelyard_generation"


def _generation_reader(connection: Any) -> Callable[[], int]:
    """How one DBAPI connection reads the generation, as cheaply as its driver allows. On
    psycopg 3 (PostgreSQL): a statement prepared once on the server, run straight through libpq,
    half the time of a cursor's round (on this machine ~52 us against ~116 us; the round trip
    to the server is the rest). Elsewhere: a cursor."""
    pgconn = getattr(connection, "pgconn", None)
    if pgconn is not None:
        from psycopg import OperationalError, pq

        prepared = pgconn.prepare(_GENERATION_STATEMENT, _GENERATION_SQL.encode())
        if prepared.status != pq.ExecStatus.COMMAND_OK:
            raise OperationalError(prepared.error_message.decode(errors="replace"))

        def read_prepared() -> int:
            result = pgconn.exec_prepared(_GENERATION_STATEMENT, [])
            if result.status != pq.ExecStatus.TUPLES_OK:
                raise OperationalError(result.error_message.decode(errors="replace"))
            return int(result.get_value(0, 0)) if result.ntuples else -1

        return read_prepared

    def read() -> int:
        cursor = connection.cursor()
        cursor.execute(_GENERATION_SQL)
        row = cursor.fetchone()
        cursor.close()
        return int(row[0]) if row else -1

    return read


class RefCache:
    """The predict path's resolutions, each kept with the registry generation it was read under."""

    def __init__(self, engine: Engine, *, max_entries: int = 10_000) -> None:
        self._engine = engine
        self._max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[int, Resolved]] = {}  # (name, ref) -> (generation, resolved)
        self._local = threading.local()  # each thread's own connection for the generation read
        # Over a network (PostgreSQL): a poll fresh enough to have seen every write that had returned
        # (registry.poll), else a read shared with concurrent requests that began after this one
        # asked (registry.fence). On SQLite (one host): a read only when the token that every write
        # changes after its commit has changed (registry.beacon).
        remote = engine.dialect.name != "sqlite"
        self._poller = GenerationPoller(self._read_generation) if remote else None
        self._shared = SharedRead(self._read_generation) if remote else None
        token = beacon.path_for(engine.url) if not remote else None
        self._beacon = beacon.Beacon(token) if token is not None else None

    def resolve(self, session: Callable[[], Session], name: str, ref: str) -> Resolved:
        """What a ref names, as :func:`resolve_version_key`.

        An entry is used only when it was resolved under the generation read just now; a
        resolution is tagged with the generation read *before* it, so one that raced a write
        is simply not reused.
        """
        generation = self._generation()
        key = (name, ref)
        cached = self._entries.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1]
        db = session()
        try:
            resolved = resolve_version_key(db, name, ref)
        finally:
            db.rollback()  # end the read: no connection is held while the request predicts
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = (generation, resolved)
        return resolved

    def _generation(self) -> int:
        shared = self._shared
        if shared is None:
            local = self._beacon
            return local.generation(self._read_generation) if local is not None else self._read_generation()
        polled = self._poller.fresh() if self._poller is not None else None
        return polled if polled is not None else shared()

    def _read_generation(self) -> int:
        for attempt in (1, 2):
            try:
                return self._reader()()
            except Exception:
                self._drop_connection()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _reader(self) -> Callable[[], int]:
        """This thread's generation read, on its own DBAPI connection, opened on its first
        request and held: one per thread, so the server's threads never wait on each other for
        it (a shared one behind a lock was half of a worker's time under load). Opened by the
        dialect outside the engine's pool (it lives as long as its thread), autocommit (a read
        never holds a transaction open); replaced after a fork (connections are not shared
        across processes)."""
        local = self._local
        reader: Callable[[], int] | None = getattr(local, "reader", None)
        if reader is None or local.pid != os.getpid():
            engine = self._engine
            cargs, cparams = engine.dialect.create_connect_args(engine.url)
            connection = engine.dialect.connect(*cargs, **cparams)
            if engine.dialect.name == "postgresql":
                connection.autocommit = True
            local.connection, local.pid = connection, os.getpid()
            local.reader = reader = _generation_reader(connection)
        return reader  # (no cast(): typing's Callable[...] alias was built on every request)

    def _drop_connection(self) -> None:
        self._local.reader = None
        connection, self._local.connection = getattr(self._local, "connection", None), None
        if connection is not None and getattr(self._local, "pid", None) == os.getpid():
            try:
                connection.close()
            except Exception:  # the connection is being thrown away anyway
                pass
