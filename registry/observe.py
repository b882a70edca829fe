"""What serving observed, in the registry: the sampled prediction log (appended in batches by each
server process, read a page at a time, exported, dropped after ``[observe] retention_days``) and
the drift counts every process adds to, per version, feature (or the predictions) and bin of the
version's reference profile, per bucket of time (:data:`BUCKET_SECONDS`).

Neither is a registry write: nothing here changes what serves, so the registry generation is
left alone. A failed write loses what it carried and never reaches a request (serving logs it).

On PostgreSQL the log is partitioned by day: the first batch that needs a day makes its partition,
and retention drops whole days. On SQLite it is one table and retention deletes rows.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from modelyard.registry.db import begin_write
from modelyard.registry.errors import InvalidInput
from modelyard.registry.models import Model, ModelVersion
from modelyard.registry.observe_tables import DriftCount, LoggedPrediction
from modelyard.registry.queries import Page
from modelyard.registry.refs import resolve_version

BUCKET_SECONDS = 300  # drift counts are kept per five minutes: a window is read to that precision
MISSING_BIN = -1
_PARTITION = re.compile(r"^prediction_log_p(\d{8})$")

BinKey = tuple[int, dt.datetime, bool, str, int]  # version id, bucket, output, feature, bin


@dataclass(frozen=True)
class Logged:
    """One sampled request, as serving hands it over."""

    version_id: int
    at: dt.datetime
    alias: str | None
    request_key: str | None
    n_rows: int
    rows: list[Any]
    outputs: list[Any]
    latency_ms: float


def bucket_of(at: dt.datetime) -> dt.datetime:
    """The start of the drift bucket ``at`` falls in."""
    seconds = int(at.timestamp()) // BUCKET_SECONDS * BUCKET_SECONDS
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def append(session: Session, logged: Iterable[Logged], bins: Mapping[BinKey, int]) -> None:
    """Write one flush of a process: its sampled requests and its bin counts, in one transaction
    (a day's partition, when one is missing, in its own before). A version deleted since is
    skipped with what it counted."""
    rows = list(logged)
    live = _live_versions(session, {r.version_id for r in rows} | {k[0] for k in bins})
    rows = [r for r in rows if r.version_id in live]
    counts = sorted((k, n) for k, n in bins.items() if k[0] in live)  # one order: no deadlock between writers
    if not rows and not counts:
        return
    if session.get_bind().dialect.name == "postgresql":
        for day in sorted({r.at.date() for r in rows}):
            _ensure_partition(session, day)
    begin_write(session)
    try:
        if rows:
            session.execute(insert(LoggedPrediction), [
                {"id": random.getrandbits(62), "at": r.at, "version_id": r.version_id, "alias": r.alias,
                 "request_key": r.request_key, "n_rows": r.n_rows, "rows": r.rows, "outputs": r.outputs,
                 "latency_ms": r.latency_ms} for r in rows])
        if counts:
            session.execute(_upsert(session), [
                {"version_id": k[0], "bucket": k[1], "output": k[2], "feature": k[3], "bin": k[4], "count": n}
                for k, n in counts])
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _upsert(session: Session) -> Any:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(DriftCount)
    return statement.on_conflict_do_update(
        index_elements=["version_id", "bucket", "output", "feature", "bin"],
        set_={"count": DriftCount.count + statement.excluded["count"]})


def _live_versions(session: Session, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    found = set(session.scalars(select(ModelVersion.id).where(ModelVersion.id.in_(ids))))
    session.rollback()
    return found


def _ensure_partition(session: Session, day: dt.date) -> None:
    """Make the log's partition for ``day`` (UTC) unless it exists; two writers making it at
    once both go on (the loser's error says it exists)."""
    name = f"prediction_log_p{day:%Y%m%d}"
    start, end = day.isoformat(), (day + dt.timedelta(days=1)).isoformat()
    with session.get_bind().connect() as conn:  # type: ignore[union-attr]
        if conn.scalar(text("SELECT to_regclass(:name)"), {"name": name}) is not None:
            return
        try:
            conn.execute(text(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF prediction_log "
                              f"FOR VALUES FROM ('{start} 00:00:00+00') TO ('{end} 00:00:00+00')"))
            conn.commit()
        except DBAPIError:
            conn.rollback()
            if conn.scalar(text("SELECT to_regclass(:name)"), {"name": name}) is None:
                raise


def prune(session: Session, retention_days: int, *, now: dt.datetime | None = None) -> int:
    """Drop what is older than ``retention_days``: whole days of the log (PostgreSQL: their
    partitions), and drift counts. The number of log days (PostgreSQL) or rows (SQLite) dropped."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=retention_days)
    dropped = 0
    if session.get_bind().dialect.name == "postgresql":
        names = session.scalars(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'prediction_log'")).all()
        session.rollback()
        for name in names:
            match = _PARTITION.match(name)
            if match and dt.datetime.strptime(match[1], "%Y%m%d").date() < cutoff.date():
                with session.get_bind().connect() as conn:  # type: ignore[union-attr]
                    conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
                    conn.commit()
                dropped += 1
    begin_write(session)
    try:
        if session.get_bind().dialect.name != "postgresql":
            deleted = session.execute(delete(LoggedPrediction).where(LoggedPrediction.at < cutoff))
            dropped = int(getattr(deleted, "rowcount", 0))
        session.execute(delete(DriftCount).where(DriftCount.bucket < bucket_of(cutoff)))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return dropped


def page(session: Session, name: str, ref: str, *, since: dt.datetime | None = None,
         until: dt.datetime | None = None, offset: int = 0, limit: int = 10,
         after: str | None = None) -> Page[dict[str, Any]]:
    """A version's logged predictions, newest first: ``limit`` from ``offset``, or after the
    cursor key ``after`` (``"<at>|<id>"``), between ``since`` and ``until``. Raises
    ModelNotFound / VersionNotFound (404), InvalidInput for a bad window."""
    version = resolve_version(session, name, ref)
    if since is not None and until is not None and since >= until:
        raise InvalidInput("since must be before until", errors={"since": str(since), "until": str(until)})
    query = select(LoggedPrediction).where(LoggedPrediction.version_id == version.id)
    if since is not None:
        query = query.where(LoggedPrediction.at >= since)
    if until is not None:
        query = query.where(LoggedPrediction.at < until)
    total = None
    if after is None:
        total = session.scalar(select(func.count()).select_from(query.subquery()))
    else:
        at, key = _cursor(after)
        query = query.where(tuple_(LoggedPrediction.at, LoggedPrediction.id) < tuple_(at, key))
    query = query.order_by(LoggedPrediction.at.desc(), LoggedPrediction.id.desc())
    found = list(session.scalars(query.offset(offset if after is None else 0).limit(limit + 1)))
    items = [_item(name, version.version, row) for row in found[:limit]]
    last = found[limit - 1] if len(found) > limit else None
    return Page(items, total, f"{last.at.isoformat()}|{last.id}" if last is not None else None)


def _cursor(key: str) -> tuple[dt.datetime, int]:
    try:
        at, ident = key.split("|")
        return dt.datetime.fromisoformat(at), int(ident)
    except ValueError:
        raise InvalidInput("not a cursor of this list", errors={"cursor": key}) from None


def _item(name: str, version: int, row: LoggedPrediction) -> dict[str, Any]:
    return {"id": row.id, "at": row.at, "model": name, "version": version, "alias": row.alias,
            "request_key": row.request_key, "n_rows": row.n_rows, "rows": row.rows, "outputs": row.outputs,
            "latency_ms": row.latency_ms}


def export(session: Session, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
           model: str | None = None, chunk: int = 1000) -> Iterator[dict[str, Any]]:
    """Every logged request between ``since`` and ``until`` (of one model, or all), oldest first,
    read ``chunk`` rows at a time."""
    query = (select(LoggedPrediction, Model.name, ModelVersion.version)
             .join(ModelVersion, ModelVersion.id == LoggedPrediction.version_id)
             .join(Model, Model.id == ModelVersion.model_id))
    if since is not None:
        query = query.where(LoggedPrediction.at >= since)
    if until is not None:
        query = query.where(LoggedPrediction.at < until)
    if model is not None:
        query = query.where(Model.name == model)
    query = query.order_by(LoggedPrediction.at, LoggedPrediction.id)
    last: tuple[dt.datetime, int] | None = None
    while True:
        step = query if last is None else query.where(tuple_(LoggedPrediction.at, LoggedPrediction.id) > last)
        found = session.execute(step.limit(chunk)).all()
        session.rollback()
        for row, name, version in found:
            yield _item(name, version, row)
        if len(found) < chunk:
            return
        last = (found[-1][0].at, found[-1][0].id)
