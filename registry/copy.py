"""Copy a whole registry to another database: the move from SQLite to PostgreSQL, and the online
backup (``modelyard db copy``).

Rows are read in one read transaction of the source (a snapshot: on SQLite in WAL mode and on
PostgreSQL at REPEATABLE READ, uploads that commit meanwhile are simply not in it), streamed in
primary-key order and written with their ids in one transaction of the target, after the target
is migrated to head; PostgreSQL's id sequences are then moved past the copied ids. Artifacts go
first, one at a time: read from the source store (which checks their sha256), put into the target
store, read back from it and checked again, so a copy that finishes holds every byte it names.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Table, delete, func, insert, select, text, update
from sqlalchemy.engine import Engine

from modelyard.registry import writes
from modelyard.registry.db import make_session_factory, upgrade_to_head
from modelyard.registry.errors import Conflict, InvalidInput
from modelyard.registry.maintenance import collect_orphans
from modelyard.registry.models import Alias, Event, Model, ModelTag, ModelVersion, RegistryState, Token
from modelyard.registry.storage import ArtifactStore

# In the order foreign keys allow; the artifact tables are the stores' to fill.
TABLES: tuple[Table, ...] = tuple(m.__table__ for m in (Model, ModelTag, ModelVersion, Alias, Event, Token))  # type: ignore[misc]
_BATCH = 1000


class TargetNotEmpty(Conflict):
    def __init__(self, what: str) -> None:
        super().__init__(f"the target registry is not empty ({what}); give --replace to empty it first")


class SameRegistry(InvalidInput):
    def __init__(self) -> None:
        super().__init__("the target is the configured registry itself")


@dataclass
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)
    artifacts: int = 0
    artifact_bytes: int = 0
    seconds: float = 0.0


def copy_registry(source: Engine, source_store: ArtifactStore, target: Engine, target_store: ArtifactStore, *,
                  replace: bool = False) -> CopyReport:
    """Copy every model, version, alias, event, token and artifact of ``source`` into ``target``.

    Refuses (TargetNotEmpty) a target that holds any model, event, token or artifact unless
    ``replace``, which empties it in the same transaction that writes the copy.
    """
    if _place(source) == _place(target):
        raise SameRegistry()
    started = time.perf_counter()
    upgrade_to_head(source)
    upgrade_to_head(target)
    if not replace:
        _check_empty(target, target_store)
    report = CopyReport()
    with _snapshot(source) as reading:
        digests = list(reading.scalars(select(ModelVersion.sha256).distinct().order_by(ModelVersion.sha256)))
        for digest in digests:
            data = source_store.open(digest)  # checked against the digest as it is read
            target_store.put(data)
            target_store.open(digest)  # and again as the target gives it back
            report.artifacts += 1
            report.artifact_bytes += len(data)
        with target.begin() as writing:
            if replace:
                for table in reversed(TABLES):
                    writing.execute(delete(table))
            for table in TABLES:
                report.rows[table.name] = _copy_table(reading, writing, table)
            generation = reading.scalar(select(RegistryState.generation)) or 0
            writing.execute(update(RegistryState).values(generation=RegistryState.generation + generation + 1))
            if writing.dialect.name == "postgresql":
                _advance_sequences(writing)
        writes.published(target.url)  # every server of the target sees the copy before this returns
    if replace:  # what the emptied target held and the copy does not use
        with make_session_factory(target)() as session:
            collect_orphans(session, target_store, grace_seconds=0)
    report.seconds = time.perf_counter() - started
    return report


def _check_empty(target: Engine, store: ArtifactStore) -> None:
    with target.connect() as conn:
        for table in (Model.__table__, Event.__table__, Token.__table__):
            count = conn.scalar(select(func.count()).select_from(table))
            if count:
                raise TargetNotEmpty(f"{count} row{'' if count == 1 else 's'} in {table.name}")  # type: ignore[attr-defined]
    if next(iter(store.digests()), None) is not None:
        raise TargetNotEmpty("its artifact store holds blobs")


def _place(engine: Engine) -> tuple[object, ...]:
    """Where a database is: one SQLite file however its path is spelled, or host, port and name."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return ("sqlite", Path(url.database or "").resolve())
    return (url.get_backend_name(), url.host or "localhost", url.port or 5432, url.database)


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One read transaction: every table is read as of its first statement."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn


def _copy_table(reading: Connection, writing: Connection, table: Table) -> int:
    copied = 0
    batch: list[dict[str, object]] = []
    rows = reading.execution_options(yield_per=_BATCH).execute(select(table).order_by(*table.primary_key.columns))
    for row in rows.mappings():
        batch.append(dict(row))
        if len(batch) == _BATCH:
            writing.execute(insert(table), batch)
            copied += len(batch)
            batch = []
    if batch:
        writing.execute(insert(table), batch)
        copied += len(batch)
    return copied


def _advance_sequences(conn: Connection) -> None:
    """Rows were written with their ids: the next id PostgreSQL hands out must come after them."""
    for table in TABLES:
        if "id" in table.c and table.c.id.autoincrement is not False:
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                              f"coalesce(max(id), 0) + 1, false) FROM {table.name}"))
