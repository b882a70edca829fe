"""Guarded canaries: a weighted alias may carry a rule (``{"metric", "max", "window_seconds",
"min_samples"}``) that returns it to its state before the canary, by itself, when one of its
candidate versions misbehaves.

The **candidates** are the versions of the split that were not in the alias's state before it
(the baseline). Serving counts, per candidate, the requests it served, those whose load or
estimator failed, their latency (in the shadows' buckets, so counts add up) and, for
``disagreement``, how many of their rows the baseline version predicts differently (run after
the answer, like a shadow). Every worker appends what it counted (:func:`add_counts`) and then
checks the guard (:func:`check`): the counts of the last ``window_seconds`` from every worker
and server are added up, and a candidate is

- ``inconclusive`` with fewer than ``min_samples`` requests (compared requests, for
  disagreement): never a trip, whatever its measure, so no NaN or a handful of requests ever
  decides;
- ``tripped`` when its measure is above ``max``: the alias returns to the baseline in one
  write, recorded as ``alias.guard_tripped`` with the measure; the first server to trip wins
  (the guard row is locked and removed with the move), the others find it gone;
- ``ok`` otherwise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelyard.registry import writes
from modelyard.registry.db import begin_write, utcnow
from modelyard.registry.errors import AliasNotFound, InvalidInput, NoGuard, VersionNotFound
from modelyard.registry.models import Alias, Guard, GuardCount, ModelVersion
from modelyard.registry.refs import get_model
from modelyard.registry.shadows import LATENCY_BUCKETS_MS, quantile

METRICS = ("error_rate", "disagreement", "p99_ms")
RULE_KEYS = ("metric", "max", "window_seconds", "min_samples")
_KEEP_WINDOWS = 2  # counts older than this many windows are deleted when a worker appends


@dataclass
class Counts:
    """What one process counted of one candidate since its last flush."""

    requests: int = 0
    errors: int = 0
    rows: int = 0
    rows_disagreed: int = 0
    compared: int = 0  # requests the baseline also answered (not stored: rows say it)
    latency_ms: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))


def checked_rule(rule: Any) -> dict[str, Any]:
    """``rule`` as stored; InvalidInput naming what is wrong."""
    if not isinstance(rule, Mapping):
        raise InvalidInput("guard must be an object: {\"metric\": \"error_rate\", \"max\": 0.05, "
                           "\"window_seconds\": 300, \"min_samples\": 200}", errors={"guard": rule})
    unknown = sorted(set(rule) - set(RULE_KEYS))
    if unknown:
        raise InvalidInput(f"guard: unknown field {unknown[0]!r} (known: {', '.join(RULE_KEYS)})",
                           errors={"guard": {unknown[0]: rule[unknown[0]]}})
    metric = rule.get("metric")
    if metric not in METRICS:
        raise InvalidInput(f"guard: metric must be one of {', '.join(METRICS)}, got {metric!r}",
                           errors={"guard": {"metric": metric}})
    limit = rule.get("max")
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0 or limit != limit:
        raise InvalidInput(f"guard: max must be a number >= 0, got {limit!r}", errors={"guard": {"max": limit}})
    if metric != "p99_ms" and limit >= 1:
        raise InvalidInput(f"guard: max of {metric} is a share below 1, got {limit!r}",
                           errors={"guard": {"max": limit}})
    whole = {}
    for key, default, top in (("window_seconds", 300, 86_400), ("min_samples", 200, 10**9)):
        value = rule.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise InvalidInput(f"guard: {key} must be a whole number from 1 to {top}, got {value!r}",
                               errors={"guard": {key: value}})
        whole[key] = value
    return {"metric": metric, "max": float(limit), **whole}


def rule_of(guard: Guard) -> dict[str, Any]:
    return {"metric": guard.metric, "max": guard.max, "window_seconds": guard.window_seconds,
            "min_samples": guard.min_samples}


def attach(session: Session, alias: Alias, rule: dict[str, Any], baseline: dict[str, Any] | None,
           weights: dict[str, int], actor: str) -> Guard | None:
    """Give a weighted alias a guard, in the caller's transaction (after the move that set its
    weights). ``baseline``: the state before the canary. None when no version of the split is new
    to the alias: nothing to watch (:func:`require` says so to a caller who asked for a guard)."""
    if baseline is None:
        return None
    before = _versions_of(baseline)
    candidates = sorted(int(n) for n, w in weights.items() if w > 0 and int(n) not in before)
    if not candidates:
        return None
    main = baseline["version"] if "version" in baseline else max(
        baseline["weights"], key=lambda n: (baseline["weights"][n], -int(n)))
    guard = Guard(alias_id=alias.id, baseline={k: baseline[k] for k in ("version", "weights") if k in baseline},
                  baseline_version=int(main), candidates=candidates, created_by=actor, **rule)
    session.add(guard)
    session.flush()
    return guard


def require(baseline: dict[str, Any] | None, weights: dict[str, int], alias: str) -> None:
    """InvalidInput when a guard could watch nothing: a new alias, or no version new to it."""
    if baseline is None:
        raise InvalidInput(f"a guard needs the alias {alias!r} to exist before the canary: it returns there "
                           f"when it trips; point {alias!r} at a version first", errors={"guard": "no baseline"})
    before = _versions_of(baseline)
    if not any(w > 0 and int(n) not in before for n, w in weights.items()):
        raise InvalidInput("a guard watches the versions new to the alias, and every version given weight here "
                           "already served it", errors={"guard": "no candidate"})


def remove(session: Session, alias_id: int) -> None:
    """Drop an alias's guard (and its counts), in the caller's transaction: the alias moved."""
    session.execute(delete(Guard).where(Guard.alias_id == alias_id))


def add_counts(session: Session, guard_id: int, counts: Mapping[int, Counts]) -> bool:
    """Append what a worker counted of a guard's candidates (one row each) and delete the
    guard's rows too old to matter; False when the guard is gone (its alias moved)."""
    begin_write(session)
    try:
        window = session.scalar(select(Guard.window_seconds).where(Guard.id == guard_id))
        if window is None:
            session.rollback()
            return False
        now = utcnow()
        session.execute(delete(GuardCount).where(
            GuardCount.guard_id == guard_id, GuardCount.at < now - dt.timedelta(seconds=window * _KEEP_WINDOWS)))
        for version, c in counts.items():
            session.add(GuardCount(guard_id=guard_id, version=version, at=now, requests=c.requests, errors=c.errors,
                                   rows=c.rows, rows_disagreed=c.rows_disagreed, latency_ms=c.latency_ms))
        session.commit()
        return True
    except IntegrityError:  # removed between the read and the insert
        session.rollback()
        return False
    except BaseException:
        session.rollback()
        raise


def status(session: Session, name: str, alias: str) -> dict[str, Any]:
    """The guard of ``alias`` and where each candidate stands over the last window. Raises
    AliasNotFound, NoGuard (404)."""
    model = get_model(session, name)
    row = session.scalar(select(Alias).where(Alias.model_id == model.id, Alias.name == alias))
    if row is None:
        raise AliasNotFound(name, alias)
    guard = session.scalar(select(Guard).where(Guard.alias_id == row.id))
    if guard is None:
        raise NoGuard(name, alias)
    return _status(session, guard, alias)


def check(session: Session, guard_id: int) -> dict[str, Any] | None:
    """Evaluate a guard over its last window and trip it when a candidate's measure is over its
    limit; the status (``"tripped"`` when this call moved the alias), None when the guard is
    gone."""
    guard = session.get(Guard, guard_id)
    if guard is None:
        session.rollback()
        return None
    alias = session.get(Alias, guard.alias_id)
    assert alias is not None
    found = _status(session, guard, alias.name)
    session.rollback()
    if found["verdict"] != "over":
        return found
    return _trip(session, guard_id, found)


def _status(session: Session, guard: Guard, alias: str) -> dict[str, Any]:
    since = utcnow() - dt.timedelta(seconds=guard.window_seconds)
    rows = session.scalars(select(GuardCount).where(GuardCount.guard_id == guard.id, GuardCount.at >= since))
    totals = {int(v): Counts() for v in guard.candidates}
    for row in rows:
        total = totals.setdefault(row.version, Counts())
        total.requests += row.requests
        total.errors += row.errors
        total.rows += row.rows
        total.rows_disagreed += row.rows_disagreed
        for i, n in enumerate(row.latency_ms[:len(total.latency_ms)]):
            total.latency_ms[i] += int(n)
    candidates = {str(v): _verdict(guard, c) for v, c in sorted(totals.items())}
    verdicts = {c["verdict"] for c in candidates.values()}
    verdict = "over" if "over" in verdicts else "inconclusive" if "inconclusive" in verdicts else "ok"
    return {"alias": alias, **rule_of(guard), "baseline": guard.baseline, "since": guard.since,
            "candidates": candidates, "verdict": verdict}


def _verdict(guard: Guard, c: Counts) -> dict[str, Any]:
    """One candidate over the window: its samples, its measure (None: nothing to measure) and
    ``ok`` / ``over`` / ``inconclusive`` (fewer samples than the rule asks for)."""
    if guard.metric == "disagreement":
        samples, measure = c.rows, (c.rows_disagreed / c.rows if c.rows else None)
    elif guard.metric == "error_rate":
        samples, measure = c.requests, (c.errors / c.requests if c.requests else None)
    else:
        samples, measure = sum(c.latency_ms), quantile(c.latency_ms, 0.99)
    if samples < guard.min_samples or measure is None:
        verdict = "inconclusive"
    else:
        verdict = "over" if measure > guard.max else "ok"
    return {"requests": c.requests, "errors": c.errors, "samples": samples, "measure": measure, "verdict": verdict}


def _trip(session: Session, guard_id: int, found: dict[str, Any]) -> dict[str, Any] | None:
    from modelyard.registry.aliases import move  # aliases attaches guards: imported when one trips

    def step() -> dict[str, Any] | None:
        guard = session.scalar(select(Guard).where(Guard.id == guard_id).with_for_update())
        if guard is None:  # another worker or server tripped it first, or the alias moved
            return None
        alias = session.get(Alias, guard.alias_id)
        assert alias is not None
        model = alias.model
        over = next(v for v, c in found["candidates"].items() if c["verdict"] == "over")
        measure = {"metric": guard.metric, "max": guard.max, "version": int(over),
                   "value": found["candidates"][over]["measure"],
                   "samples": found["candidates"][over]["samples"], "window_seconds": guard.window_seconds}
        baseline = guard.baseline
        numbers = sorted(_versions_of(baseline))
        versions = {v.version: v for v in session.scalars(
            select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version.in_(numbers)))}
        missing = [n for n in numbers if n not in versions]
        if missing:
            raise VersionNotFound(model.name, str(missing[0]))
        if "weights" in baseline:
            target: Any = versions
            weights = {str(k): int(v) for k, v in baseline["weights"].items()}
        else:
            target, weights = versions[int(baseline["version"])], None
        move(session, model, alias.name, target, actor="guard", weights=weights, action="alias.guard_tripped",
             note={"tripped": measure})
        return {**found, "model": model.name, "verdict": "tripped", "tripped": measure}

    return writes.write(session, step)


def _versions_of(state: dict[str, Any]) -> set[int]:
    if "weights" in state:
        return {int(n) for n, w in state["weights"].items() if w > 0}
    return {int(state["version"])}
