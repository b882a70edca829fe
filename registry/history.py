"""An alias's history, read from the audit log: every state it had (a version or a split of
versions), from when until when, who set it and the event that did; and the one state in force at
an instant. Nothing is stored twice: the events already record every move, so aliases that moved
before this module existed have their history too.

A state starts at a move (``alias.set``, ``alias.moved``, ``alias.rolled_back``, or
``alias.guard_tripped``: a guard returned the alias to its state before the canary) and lasts until
the alias's next move or its removal (``alias.removed``), which starts no state.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelyard.registry.aliases import MOVES
from modelyard.registry.errors import AliasNotFound, NoStateAt
from modelyard.registry.models import Event
from modelyard.registry.queries import Page
from modelyard.registry.refs import get_model

_ENDS = (*MOVES, "alias.removed")  # the events that end a state


def alias_history(session: Session, name: str, alias: str, *, offset: int = 0, limit: int = 10,
                  before: int | None = None) -> Page[dict[str, Any]]:
    """The states ``alias`` had, newest first: ``limit`` from ``offset``, or older than the event
    id ``before`` (a cursor). Raises ModelNotFound, AliasNotFound for an alias that never moved."""
    where = (Event.model_name == name, Event.alias == alias, Event.action.in_(MOVES))
    total = None
    if before is None:
        total = session.scalar(select(func.count()).where(*where))
        if not total:
            get_model(session, name)
            raise AliasNotFound(name, alias)
    query = select(Event).where(*where).order_by(Event.id.desc())
    query = query.where(Event.id < before) if before is not None else query.offset(offset)
    events = list(session.scalars(query.limit(limit + 1)))
    page = events[:limit]
    ends: list[tuple[int, dt.datetime]] = []
    if page:  # what ended each state: the next move or removal after it (at most one removal per state)
        ends = list(session.execute(
            select(Event.id, Event.at).where(Event.model_name == name, Event.alias == alias,
                                             Event.action.in_(_ENDS), Event.id > page[-1].id)
            .order_by(Event.id).limit(2 * len(page) + 1)))
    items = []
    for event in page:
        until = next((at for event_id, at in ends if event_id > event.id), None)
        items.append({"event": event.id, "alias": alias, **_state(event), "since": event.at, "until": until,
                      "actor": event.actor, "action": event.action})
    return Page(items, total, events[limit - 1].id if len(events) > limit else None)


def alias_at(session: Session, name: str, alias: str, at: dt.datetime) -> dict[str, Any]:
    """``{"alias", "at", "version"}`` or ``{"alias", "at", "weights"}``: the state in force at
    ``at``. Raises NoStateAt (404) before the alias existed or while it was removed."""
    event = session.scalar(
        select(Event).where(Event.model_name == name, Event.alias == alias, Event.action.in_(_ENDS), Event.at <= at)
        .order_by(Event.id.desc()).limit(1))
    if event is None or event.action == "alias.removed":
        get_model(session, name)
        raise NoStateAt(name, alias, at)
    return {"alias": alias, "at": at, **_state(event)}


def _state(event: Event) -> dict[str, Any]:
    """The state a move gave its alias: ``{"version": n}`` or ``{"weights": {...}}`` (and its
    ``guard`` rule, when it had one)."""
    after = event.after or {}
    if after.get("weights"):
        return {"weights": dict(after["weights"]), **({"guard": after["guard"]} if after.get("guard") else {})}
    return {"version": after.get("version", event.version)}
