"""Alias use cases: point an alias at a version, or split its requests between versions by
weight (a canary), promote, remove, and roll back. Plain functions: a Session first, plain values
after; each is one write transaction (``writes.write``) that records what changed in the audit log.

An alias's **state** is one value, the same in the API, the events and a rollback:
``{"version": 4}``, or ``{"weights": {"3": 90, "4": 10}}`` (version numbers as strings, integer
weights; a version of weight 0 stays in the state but gets no requests). A weighted alias's row
also points at its heaviest version, so everything that reads one version per alias (the
version's detail, preloading, a delete's check) keeps working; serving reads the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.registry import approvals, guards
from modelyard.registry.approvals import NO_GATE, Gate, Replayer
from modelyard.registry.db import utcnow
from modelyard.registry.errors import AliasNotFound, InvalidInput, NoRollbackHistory, VersionNotFound
from modelyard.registry.models import Alias, Event, Guard, Model, ModelVersion
from modelyard.registry.refs import DEFAULT_ALIAS, get_model, parse_version_ref, resolve_version, validate_alias_name
from modelyard.registry.writes import record, write

# the events that give an alias a new state (an approved move is an alias.moved or alias.set)
MOVES = ("alias.set", "alias.moved", "alias.rolled_back", "alias.guard_tripped")


@dataclass(frozen=True)
class AliasMove:
    alias: str
    version: int  # the version it points at now (a weighted alias's heaviest)
    previous_version: int | None
    weights: dict[str, int] | None = None  # the split, for a weighted alias
    previous_weights: dict[str, int] | None = None
    guard: dict[str, Any] | None = None  # the rule guarding the split, if any


def state_of(session: Session, alias: Alias) -> dict[str, Any]:
    """An alias row's state: ``{"version": n}`` or ``{"weights": {...}}`` (with its ``guard``
    rule when it has one)."""
    if not alias.weights:
        return {"version": alias.target.version}
    guard = session.scalar(select(Guard).where(Guard.alias_id == alias.id))
    return {"weights": dict(alias.weights), **({"guard": guards.rule_of(guard)} if guard is not None else {})}


def set_alias(session: Session, name: str, alias: str, ref: str, *, actor: str = "anonymous",
              gate: Gate = NO_GATE, replayer: Replayer | None = None) -> AliasMove | dict[str, Any]:
    """Point ``alias`` at the version ``ref`` names (create or move it; a weighted alias becomes
    plain); one transaction. A ``gate`` may replay the version's example first and hold the
    move for a second approver (then the pending move is returned, see
    :mod:`registry.approvals`).

    Raises InvalidName (422) for a reserved or malformed alias, ModelNotFound /
    VersionNotFound (404), ReplayFailed (409).
    """
    validate_alias_name(alias)
    if gate != NO_GATE:
        number = resolve_version(session, name, ref).version
        return _gated(session, name, alias, {"version": number}, actor, gate, replayer)

    def step() -> AliasMove:
        version = resolve_version(session, name, ref)
        return move(session, version.model, alias, version, actor=actor)

    return write(session, step)


def approve(session: Session, name: str, alias: str, approval_id: int, *, actor: str, gate: Gate = NO_GATE,
            replayer: Replayer | None = None) -> AliasMove:
    """Make a move that waited for its second approver: ``actor`` must not be who asked for it
    (403); a replay gate replays its versions again first. Raises NoApproval (404),
    ApprovalClosed (409) when approved already or expired, ReplayFailed (409)."""
    waiting = {p["id"]: p for p in approvals.pending(session, name, alias)}
    session.rollback()
    state = waiting.get(approval_id)
    if state is not None and state["requested_by"] != actor and gate.replay:
        for number in _serving(state):
            approvals.replay(session, name, number, replayer)

    def step() -> AliasMove:
        state = approvals.claim(session, name, alias, approval_id, actor)
        note = {"approval": {"id": approval_id, "requested_by": waiting[approval_id]["requested_by"]}} \
            if approval_id in waiting else {}
        if "weights" in state:
            return _split(session, name, alias, state["weights"], state.get("guard"), actor, note)
        version = resolve_version(session, name, str(state["version"]))
        return move(session, version.model, alias, version, actor=actor, note=note)

    return write(session, step)


def _gated(session: Session, name: str, alias: str, state: dict[str, Any], actor: str, gate: Gate,
           replayer: Replayer | None) -> AliasMove | dict[str, Any]:
    """A move of a gated alias: its versions replayed, then held for a second approver or made."""
    session.rollback()
    if gate.replay:
        for number in _serving(state):
            approvals.replay(session, name, number, replayer)
    if gate.second_approver:
        def hold() -> dict[str, Any]:
            held = approvals.request(session, name, alias, state, actor, gate)
            record(session, name, "alias.move_requested", actor, alias=alias, after={**state, "approval": held["id"]})
            return held

        return write(session, hold)
    if "weights" in state:
        return write(session, lambda: _split(session, name, alias, state["weights"], state.get("guard"), actor))
    return set_alias(session, name, alias, str(state["version"]), actor=actor)


def _serving(state: dict[str, Any]) -> list[int]:
    """The versions a state sends requests to."""
    if "weights" in state:
        return sorted(int(n) for n, w in state["weights"].items() if w > 0)
    return [int(state["version"])]


def set_weights(session: Session, name: str, alias: str, weights: Mapping[Any, Any], *,
                guard: Mapping[str, Any] | None = None, actor: str = "anonymous", gate: Gate = NO_GATE,
                replayer: Replayer | None = None) -> AliasMove | dict[str, Any]:
    """Split ``alias``'s requests between versions by ``weights`` (``{"3": 90, "4": 10}``),
    guarded by ``guard`` (see :mod:`registry.guards`): the versions new to the alias are
    watched, and it returns to its state before the canary when one's measure passes the rule's
    limit. A guarded alias given new weights stays guarded against the same earlier state.

    Raises InvalidInput (422) for weights that are not whole numbers >= 0 with one above 0, or
    keys that are not version numbers, or a guard that is malformed or would watch nothing;
    VersionNotFound (404) for a version that does not exist. A ``gate`` as :func:`set_alias`'s
    (every version given weight is replayed).
    """
    validate_alias_name(alias)
    split = _checked_weights(weights)
    rule = guards.checked_rule(guard) if guard is not None else None
    if gate != NO_GATE:
        _versions(session, get_model(session, name), split)  # 404s before any replay
        return _gated(session, name, alias, {"weights": split, **({"guard": rule} if rule else {})}, actor, gate,
                      replayer)
    return write(session, lambda: _split(session, name, alias, split, rule, actor))


def _split(session: Session, name: str, alias: str, split: dict[str, int], rule: dict[str, Any] | None, actor: str,
           note: dict[str, Any] | None = None) -> AliasMove:
    """Weights (and a guard) for an alias, in the caller's transaction."""
    model = get_model(session, name)
    versions = _versions(session, model, split)
    baseline = None
    if rule is not None:
        row = session.scalar(select(Alias).where(Alias.model_id == model.id, Alias.name == alias))
        current = session.scalar(select(Guard).where(Guard.alias_id == row.id)) if row is not None else None
        baseline = current.baseline if current is not None else (state_of(session, row) if row else None)
        guards.require(baseline, split, alias)
    return move(session, model, alias, versions, actor=actor, weights=split, guard=rule, baseline=baseline,
                note=note)


def promote(session: Session, name: str, ref: str, alias: str = DEFAULT_ALIAS, *, actor: str = "anonymous",
            gate: Gate = NO_GATE, replayer: Replayer | None = None) -> AliasMove | dict[str, Any]:
    """Move ``alias`` (default ``production``) to the version ``ref`` names, plain (a weighted
    alias stops splitting); returns the version it pointed at before (None when it is new), or
    the pending move when its gate holds it for a second approver."""
    return set_alias(session, name, alias, ref, actor=actor, gate=gate, replayer=replayer)


def delete_alias(session: Session, name: str, alias: str, *, actor: str = "anonymous") -> None:
    """Remove an alias. Raises AliasNotFound (404)."""

    def step() -> None:
        model = get_model(session, name)
        row = _row(session, model, alias)
        before = state_of(session, row)
        session.delete(row)
        record(session, name, "alias.removed", actor, version=row.target.version, alias=alias, before=before)

    write(session, step)


def rollback_alias(session: Session, name: str, alias: str, *, actor: str = "anonymous") -> AliasMove:
    """Return ``alias`` to its state before its last move (weights included), read from the
    event log. A second rollback undoes the first.

    Raises AliasNotFound (404), NoRollbackHistory (409) when the alias has never moved or a
    version of its previous state was deleted.
    """

    def step() -> AliasMove:
        model = get_model(session, name)
        _row(session, model, alias)
        last = session.scalar(
            select(Event).where(Event.model_name == name, Event.alias == alias, Event.action.in_(MOVES))
            .order_by(Event.id.desc()).limit(1)
        )
        before = (last.before or {}) if last is not None else {}
        if "weights" in before:
            split = {str(k): int(v) for k, v in before["weights"].items()}
            try:
                versions = _versions(session, model, split)
            except VersionNotFound as missing:
                raise NoRollbackHistory(name, alias, f"its previous version {missing.ref} was deleted") from None
            return move(session, model, alias, versions, actor=actor, weights=split, action="alias.rolled_back",
                        guard=before.get("guard"), baseline=state_of(session, _row(session, model, alias)))
        previous = before.get("version")
        if previous is None:
            raise NoRollbackHistory(name, alias, "it has never moved")
        target = session.scalar(
            select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == previous)
        )
        if target is None:
            raise NoRollbackHistory(name, alias, f"its previous version {previous} was deleted")
        return move(session, model, alias, target, actor=actor, action="alias.rolled_back")

    return write(session, step)


def move(
    session: Session, model: Model, name: str, target: ModelVersion | dict[int, ModelVersion], *, actor: str,
    weights: dict[str, int] | None = None, action: str | None = None, guard: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None, note: dict[str, Any] | None = None,
) -> AliasMove:
    """Give alias ``name`` a new state, in the caller's transaction: ``target`` one version, or
    (with ``weights``) the versions of the split by number, guarded by ``guard`` against
    ``baseline`` when given (a guard that would watch no version is not kept). Any guard the
    alias had goes. Records the move (``note``: more for the event's ``after``)."""
    if weights is not None:
        assert isinstance(target, dict)
        main = target[max(target, key=lambda n: (weights[str(n)], -n))]
    else:
        assert isinstance(target, ModelVersion)
        main = target
    alias = session.scalar(select(Alias).where(Alias.model_id == model.id, Alias.name == name))
    before = None
    if alias is None:
        alias = Alias(model_id=model.id, name=name, version_id=main.id, weights=weights)
        session.add(alias)
    else:
        before = state_of(session, alias)
        if "guard" in before:
            guards.remove(session, alias.id)
        alias.version_id, alias.weights, alias.updated_at = main.id, weights, utcnow()
    session.flush()
    after: dict[str, Any] = {"weights": weights} if weights is not None else {"version": main.version}
    if guard is not None and weights is not None and guards.attach(session, alias, guard, baseline, weights, actor):
        after["guard"] = guard
    record(session, model.name, action or ("alias.set" if before is None else "alias.moved"), actor,
           version=main.version, alias=name, before=before, after={**after, **(note or {})})
    return AliasMove(name, main.version, None if before is None else _main_version(before),
                     weights, None if before is None else before.get("weights"), after.get("guard"))


def _main_version(state: dict[str, Any]) -> int:
    """The version a state points at, or a split's heaviest."""
    if "version" in state:
        return int(state["version"])
    weights = state["weights"]
    return int(max(weights, key=lambda n: (weights[n], -int(n))))


def _row(session: Session, model: Model, alias: str) -> Alias:
    row = session.scalar(select(Alias).where(Alias.model_id == model.id, Alias.name == alias))
    if row is None:
        raise AliasNotFound(model.name, alias)
    return row


def _versions(session: Session, model: Model, weights: dict[str, int]) -> dict[int, ModelVersion]:
    """The versions a split names, by number; VersionNotFound for the first one missing."""
    numbers = sorted(int(n) for n in weights)
    found = {v.version: v for v in session.scalars(
        select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version.in_(numbers)))}
    for number in numbers:
        if number not in found:
            raise VersionNotFound(model.name, str(number))
    return found


def _checked_weights(weights: Mapping[Any, Any]) -> dict[str, int]:
    """``weights`` as ``{"<version>": weight}`` in version order; InvalidInput naming what is wrong."""
    if not isinstance(weights, Mapping) or not weights:
        raise InvalidInput("weights must be an object of version numbers and weights, e.g. {\"3\": 90, \"4\": 10}",
                           errors={"weights": weights})
    split: dict[int, int] = {}
    for key, weight in weights.items():
        number = parse_version_ref(str(key))
        if number is None or number < 1:
            raise InvalidInput(f"weights: {key!r} is not a version number", errors={"weights": {str(key): weight}})
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise InvalidInput(f"weights: the weight of version {number} must be a whole number >= 0, "
                               f"got {weight!r}", errors={"weights": {str(key): weight}})
        if number in split:
            raise InvalidInput(f"weights: version {number} is given twice", errors={"weights": {str(key): weight}})
        split[number] = weight
    if not any(split.values()):
        raise InvalidInput("weights: at least one weight must be above 0", errors={"weights": dict(weights)})
    return {str(number): split[number] for number in sorted(split)}
