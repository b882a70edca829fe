"""Gates on moving an alias (``[aliases]`` in the configuration), checked by the alias use cases:

- a **replay**: a version reaches the alias only if its upload ``example`` still predicts what it
  predicted at upload (``example_predictions``), predicted again by the serving path when the
  move is made; else 409 naming the first row that differs;
- a **second approver**: the move is recorded as pending (202) and made only when a different
  token with the promoter role approves it before it expires; the same token approving is a 403.

A rollback returns the alias to a state it had, and a guard's trip is automatic: neither is held
(they are what an incident needs at once).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.registry.auth import Forbidden
from modelyard.registry.db import utcnow
from modelyard.registry.errors import Conflict, NotFound
from modelyard.registry.models import Approval, ModelVersion
from modelyard.registry.refs import get_model

# (model name, version number, rows as a client sends them) -> the version's predictions: serving's
# path, handed in by the route (the registry knows no estimator).
Replayer = Callable[[str, int, Any], list[Any]]


class Gate(NamedTuple):
    """What a move of one alias must pass."""

    replay: bool = False
    second_approver: bool = False
    ttl_seconds: int = 86_400


NO_GATE = Gate()


class ReplayFailed(Conflict):
    def __init__(self, name: str, version: int, reason: str) -> None:
        self.name = name
        self.version = version
        super().__init__(f"version {version} of {name!r} failed its replay: {reason}")


class NoApproval(NotFound):
    def __init__(self, name: str, alias: str, approval: int) -> None:
        super().__init__(f"alias {alias!r} of {name!r} has no pending move {approval}")


class ApprovalClosed(Conflict):
    def __init__(self, approval: int, why: str) -> None:
        super().__init__(f"move {approval} cannot be approved: {why}")


def replay(session: Session, name: str, number: int, replayer: Replayer | None) -> None:
    """Predict version ``number``'s upload example again and compare with what it predicted at
    upload (numbers within 1e-9, relative); ReplayFailed (409) naming the first differing row."""
    row = session.execute(select(ModelVersion.example, ModelVersion.example_predictions).join(
        ModelVersion.model).where(ModelVersion.version == number, ModelVersion.model.has(name=name))).first()
    session.rollback()  # the read ends before the model is loaded and predicts
    if row is None or row.example is None or row.example_predictions is None:
        raise ReplayFailed(name, number, "it has no upload example and answers to replay; upload it with an "
                                         "`example` field")
    if replayer is None:
        raise ReplayFailed(name, number, "no predictor to replay it with")
    now = replayer(name, number, row.example)
    stored = row.example_predictions
    for i, (then, again) in enumerate(zip(stored, now)):
        if not _same(then, again):
            raise ReplayFailed(name, number, f"row {i} of its example predicted {again!r} now, {then!r} at upload")
    if len(now) != len(stored):
        raise ReplayFailed(name, number, f"its example gave {len(now)} predictions now, {len(stored)} at upload")


def request(session: Session, name: str, alias: str, state: dict[str, Any], actor: str, gate: Gate) -> dict[str, Any]:
    """Record a move waiting for its second approver, in the caller's transaction."""
    model = get_model(session, name)
    now = utcnow()
    pending = Approval(model_id=model.id, alias=alias, state=state, requested_by=actor, requested_at=now,
                       expires_at=now + dt.timedelta(seconds=gate.ttl_seconds))
    session.add(pending)
    session.flush()
    return view(pending, name)


def pending(session: Session, name: str, alias: str) -> list[dict[str, Any]]:
    """The moves of ``alias`` waiting for an approver and not expired, oldest first."""
    model = get_model(session, name)
    rows = session.scalars(select(Approval).where(
        Approval.model_id == model.id, Approval.alias == alias, Approval.approved_by.is_(None),
        Approval.expires_at > utcnow()).order_by(Approval.id))
    return [view(row, name) for row in rows]


def claim(session: Session, name: str, alias: str, approval_id: int, actor: str) -> dict[str, Any]:
    """Approve a pending move in the caller's write transaction (its row locked): its state.
    Raises NoApproval (404), Forbidden (403) for the token that asked, ApprovalClosed (409) when
    it was approved already or expired."""
    model = get_model(session, name)
    row = None if not 0 < approval_id <= 2**31 - 1 else session.scalar(select(Approval).where(
        Approval.id == approval_id, Approval.model_id == model.id, Approval.alias == alias).with_for_update())
    if row is None:
        raise NoApproval(name, alias, approval_id)
    if row.approved_by is not None:
        raise ApprovalClosed(approval_id, f"{row.approved_by} approved it already")
    if row.expires_at <= utcnow():
        raise ApprovalClosed(approval_id, f"it expired at {row.expires_at.isoformat()}; ask again")
    if row.requested_by == actor:
        raise Forbidden(f"move {approval_id} needs a second approver: {actor!r} asked for it, so another "
                        "promoter's token must approve it")
    row.approved_by, row.approved_at = actor, utcnow()
    return dict(row.state)


def view(row: Approval, name: str) -> dict[str, Any]:
    return {"id": row.id, "model": name, "alias": row.alias, **row.state, "requested_by": row.requested_by,
            "requested_at": row.requested_at, "expires_at": row.expires_at}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if not numbers:
            return False
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) or (math.isnan(a) and math.isnan(b))
    return bool(a == b)
