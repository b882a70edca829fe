"""Shadows: a fraction of an alias's requests also run on another version after the answer is
computed, and compared (serving runs them, see ``serving.shadow``). Here: setting and removing
a shadow (each a registry write, served on the next request like any move), the counts a worker
adds (:func:`add_counts`, never a registry write: counts do not change what serves), and the
report they add up to across every worker and server (:func:`report`).

Latencies are counted in fixed buckets (:data:`LATENCY_BUCKETS_MS`) so that counts from any
number of processes add up; a percentile is read off the summed buckets (linear within one).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelyard.registry import writes
from modelyard.registry.db import begin_write
from modelyard.registry.errors import AliasNotFound, InvalidInput, NoShadow
from modelyard.registry.models import Alias, Shadow, ShadowCount
from modelyard.registry.refs import get_model, resolve_version

# Upper bounds (ms) of the latency buckets; the last bucket holds everything slower.
LATENCY_BUCKETS_MS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0)
_FOLD_AT = 64  # count rows of one shadow above which reading the report folds them into one


@dataclass
class Counts:
    """What one process saw of one shadow since its last flush."""

    requests: int = 0
    compared: int = 0
    failures: int = 0
    dropped: int = 0
    rows: int = 0
    rows_agreed: int = 0
    max_abs_diff: float | None = None
    primary_ms: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    shadow_ms: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))

    def add_latency(self, which: list[int], ms: float) -> None:
        which[bisect.bisect_left(LATENCY_BUCKETS_MS, ms)] += 1

    def add_diff(self, diff: float) -> None:
        self.max_abs_diff = diff if self.max_abs_diff is None else max(self.max_abs_diff, diff)


def set_shadow(session: Session, name: str, alias: str, ref: str, fraction: float, *,
               actor: str = "anonymous") -> dict[str, Any]:
    """Shadow ``alias`` with the version ``ref`` names for ``fraction`` (0 < f <= 1) of its
    requests, replacing any shadow it had (the report starts again). Raises InvalidInput (422),
    ModelNotFound / VersionNotFound / AliasNotFound (404)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise InvalidInput(f"fraction must be above 0 and at most 1, got {fraction!r}", errors={"fraction": fraction})

    def step() -> dict[str, Any]:
        version = resolve_version(session, name, ref)
        row = _alias(session, name, alias)
        session.execute(delete(Shadow).where(Shadow.alias_id == row.id))
        shadow = Shadow(alias_id=row.id, version_id=version.id, fraction=float(fraction), created_by=actor)
        session.add(shadow)
        session.flush()
        writes.record(session, name, "alias.shadow_set", actor, version=version.version, alias=alias,
                      after={"version": version.version, "fraction": float(fraction)})
        return {"alias": alias, "version": version.version, "fraction": float(fraction), "since": shadow.since}

    return writes.write(session, step)


def delete_shadow(session: Session, name: str, alias: str, *, actor: str = "anonymous") -> None:
    """Stop shadowing ``alias``; its report goes with it. Raises NoShadow (404)."""

    def step() -> None:
        shadow = _shadow(session, name, alias)
        version = shadow.target.version
        session.delete(shadow)
        writes.record(session, name, "alias.shadow_removed", actor, version=version, alias=alias,
                      before={"version": version, "fraction": shadow.fraction})

    writes.write(session, step)


def add_counts(session: Session, shadow_id: int, counts: Counts) -> bool:
    """Append what a worker saw of a shadow; False when the shadow is gone (its counts with it)."""
    begin_write(session)
    try:
        session.add(ShadowCount(shadow_id=shadow_id, requests=counts.requests, compared=counts.compared,
                                failures=counts.failures, dropped=counts.dropped, rows=counts.rows,
                                rows_agreed=counts.rows_agreed, max_abs_diff=counts.max_abs_diff,
                                primary_ms=counts.primary_ms, shadow_ms=counts.shadow_ms))
        session.commit()
        return True
    except IntegrityError:  # removed (or replaced) since the worker read it
        session.rollback()
        return False
    except BaseException:
        session.rollback()
        raise


def report(session: Session, name: str, alias: str) -> dict[str, Any]:
    """The shadow's report: its version, fraction and start; requests sampled, compared,
    agreement (the share of compared rows whose predictions are equal; numbers within 1e-9),
    failures, dropped, the largest difference of numeric outputs, and p50/p99 latency (ms) of
    the primary and the shadow, added up over every worker and server. Raises NoShadow (404)."""
    shadow = _shadow(session, name, alias)
    rows = list(session.scalars(select(ShadowCount).where(ShadowCount.shadow_id == shadow.id)))
    total = _sum(rows)
    if len(rows) > _FOLD_AT:
        _fold(session, shadow.id, rows, total)
    compared_rows = total.rows
    return {
        "alias": alias, "version": shadow.target.version, "fraction": shadow.fraction, "since": shadow.since,
        "requests": total.requests, "compared": total.compared,
        "agreement": None if not compared_rows else total.rows_agreed / compared_rows,
        "rows": compared_rows, "failures": total.failures, "dropped": total.dropped,
        "max_abs_diff": total.max_abs_diff,
        "latency_ms": {"primary": _percentiles(total.primary_ms), "shadow": _percentiles(total.shadow_ms)},
    }


def _sum(rows: list[ShadowCount]) -> Counts:
    total = Counts()
    for row in rows:
        total.requests += row.requests
        total.compared += row.compared
        total.failures += row.failures
        total.dropped += row.dropped
        total.rows += row.rows
        total.rows_agreed += row.rows_agreed
        if row.max_abs_diff is not None:
            total.add_diff(row.max_abs_diff)
        for mine, theirs in ((total.primary_ms, row.primary_ms), (total.shadow_ms, row.shadow_ms)):
            for i, count in enumerate(theirs[:len(mine)]):
                mine[i] += int(count)
    return total


def _fold(session: Session, shadow_id: int, rows: list[ShadowCount], total: Counts) -> None:
    """Replace the rows just read by their sum, in one transaction (rows appended meanwhile stay)."""
    session.rollback()
    begin_write(session)
    try:
        deleted = session.execute(delete(ShadowCount).where(ShadowCount.id.in_([r.id for r in rows])))
        if getattr(deleted, "rowcount", 0) != len(rows):  # another reader folded them first
            session.rollback()
            return
        session.add(ShadowCount(shadow_id=shadow_id, requests=total.requests, compared=total.compared,
                                failures=total.failures, dropped=total.dropped, rows=total.rows,
                                rows_agreed=total.rows_agreed, max_abs_diff=total.max_abs_diff,
                                primary_ms=total.primary_ms, shadow_ms=total.shadow_ms))
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _percentiles(buckets: list[int]) -> dict[str, float | None]:
    return {"p50": quantile(buckets, 0.5), "p99": quantile(buckets, 0.99)}


def quantile(buckets: list[int], q: float) -> float | None:
    """The q-quantile of bucketed latencies, linear within its bucket (None: nothing counted)."""
    count = sum(buckets)
    if not count:
        return None
    rank, seen = q * count, 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            low = LATENCY_BUCKETS_MS[i - 1] if i > 0 else 0.0
            high = LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else LATENCY_BUCKETS_MS[-1] * 2
            return round(low + (high - low) * (rank - seen) / n, 3)
        seen += n
    return LATENCY_BUCKETS_MS[-1] * 2


def _alias(session: Session, name: str, alias: str) -> Alias:
    model = get_model(session, name)
    row = session.scalar(select(Alias).where(Alias.model_id == model.id, Alias.name == alias))
    if row is None:
        raise AliasNotFound(name, alias)
    return row


def _shadow(session: Session, name: str, alias: str) -> Shadow:
    shadow = session.scalar(select(Shadow).where(Shadow.alias_id == _alias(session, name, alias).id))
    if shadow is None:
        raise NoShadow(name, alias)
    return shadow

