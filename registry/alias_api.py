"""The REST routes of aliases: promote, set (a version or weights), remove, roll back, and an
alias's history. Routes parse, call one use case of ``aliases`` (or ``history``), and serialize;
the body rules are the registry blueprint's (``registry.api``)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import jsonify
from flask.views import MethodView
from flask_smorest.pagination import PaginationParameters
from marshmallow import fields

from modelyard.registry import aliases, approvals, guards, history, queries, refs, shadows
from modelyard.registry.api import check_body_type
from modelyard.registry.schemas import (
    AliasMoveSchema,
    AliasSetSchema,
    AliasStateSchema,
    ArgumentsParser,
    HistoryArgs,
    PromoteSchema,
    ShadowReportSchema,
    ShadowSchema,
    ShadowSetSchema,
)
from modelyard.web.auth import current_actor, moves_alias, private, requires
from modelyard.web.context import runtime, session
from modelyard.web.paging import PagedBlueprint, page_of


class PendingMoveSchema(ma.Schema):
    id = fields.Integer()
    model = fields.String()
    alias = fields.String()
    version = fields.Integer(metadata={"description": "the version it would point at"})
    weights = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={"description": "or the split"})
    guard = fields.Dict()
    requested_by = fields.String()
    requested_at = fields.AwareDateTime()
    expires_at = fields.AwareDateTime()


class CandidateSchema(ma.Schema):
    requests = fields.Integer(metadata={"description": "requests it served in the window"})
    errors = fields.Integer(metadata={"description": "of those, its load or its estimator failed"})
    samples = fields.Integer(metadata={"description": "what the measure is over: requests, rows compared, "
                                                      "or latencies"})
    measure = fields.Float(allow_none=True)
    verdict = fields.String(metadata={"description": "ok, over, or inconclusive (fewer samples than "
                                                     "min_samples)"})


class GuardStatusSchema(ma.Schema):
    alias = fields.String()
    metric = fields.String()
    max = fields.Float()
    window_seconds = fields.Integer()
    min_samples = fields.Integer()
    baseline = fields.Dict(metadata={"description": "the state the alias returns to when the guard trips"})
    since = fields.AwareDateTime()
    candidates = fields.Dict(keys=fields.String(), values=fields.Nested(CandidateSchema))
    verdict = fields.String()


blp = PagedBlueprint("aliases", __name__, description="Aliases: a version or a split of versions, and their history")
blp.ARGUMENTS_PARSER = ArgumentsParser()
blp.before_request(check_body_type)


@blp.route("/models/<name>/versions/<ref>/promote")
class Promote(MethodView):
    @requires("uploader")
    @moves_alias
    @blp.arguments(PromoteSchema, required=False)
    @blp.response(200, AliasMoveSchema)
    @blp.alt_response(202, schema=PendingMoveSchema, description="Held for a second approver ([aliases] "
                      "second_approver): the pending move, and where to approve it")
    @blp.alt_response(409, description="The version failed its replay ([aliases] replay)")
    def post(self, body: dict[str, Any], name: str, ref: str) -> Any:
        """Promote a version

        Moves `alias` (default `production`) to this version and answers the version it
        pointed at before (`previous_version`, null when the alias is new).
        """
        alias = body.get("alias", refs.DEFAULT_ALIAS)
        return _moved(aliases.promote(session(), name, ref, alias, actor=current_actor().name, gate=_gate(alias),
                                      replayer=_replay))


@blp.route("/models/<name>/aliases")
class Aliases(MethodView):
    @requires("reader")
    @blp.response(200, {"type": "object", "additionalProperties": {"oneOf": [
        {"type": "integer"},
        {"type": "object", "properties": {"weights": {"type": "object", "additionalProperties": {"type": "integer"}},
                                          "guard": {"type": "object"}}},
    ]}})
    def get(self, name: str) -> Any:
        """List a model's aliases

        As `{alias: version}`; a weighted alias as `{alias: {"weights": {"3": 90, "4": 10}}}`, with
        its `guard` rule when it has one.
        """
        return jsonify(queries.model_aliases(session(), name))


@blp.route("/models/<name>/aliases/<alias>")
class AliasDetail(MethodView):
    @requires("uploader")
    @moves_alias
    @blp.arguments(AliasSetSchema)
    @blp.response(200, AliasMoveSchema)
    @blp.alt_response(202, schema=PendingMoveSchema, description="Held for a second approver")
    def put(self, body: dict[str, Any], name: str, alias: str) -> Any:
        """Set or move an alias, or split it between versions

        Body `{"version": 3}` (a number, `v3`, another alias or `latest`), or `{"weights": {"3": 90,
        "4": 10}}`: each request is served by one of the versions, chosen by weight (by a hash of
        its `X-Request-Key` header when it has one, so a key keeps its version; at random
        otherwise). `latest`, numbers and `v<number>` are reserved and cannot be alias names.

        Weights may carry a `guard`, `{"metric": "error_rate" | "disagreement" | "p99_ms", "max":
        0.05, "window_seconds": 300, "min_samples": 200}`: the versions new to the alias are
        measured over the window on every server, and the alias returns to its state before the
        canary by itself (event `alias.guard_tripped`, with the measure) when one passes `max`
        on at least `min_samples` requests; fewer is inconclusive, never a trip.
        """
        actor, gate = current_actor().name, _gate(alias)
        if "weights" in body:
            return _moved(aliases.set_weights(session(), name, alias, body["weights"], guard=body.get("guard"),
                                              actor=actor, gate=gate, replayer=_replay))
        return _moved(aliases.set_alias(session(), name, alias, body["version"], actor=actor, gate=gate,
                                        replayer=_replay))

    @requires("uploader")
    @moves_alias
    @blp.response(204)
    def delete(self, name: str, alias: str) -> None:
        """Remove an alias"""
        aliases.delete_alias(session(), name, alias, actor=current_actor().name)


@blp.route("/models/<name>/aliases/<alias>/rollback")
class AliasRollback(MethodView):
    @requires("uploader")
    @moves_alias
    @blp.response(200, AliasMoveSchema)
    @blp.alt_response(409, description="The alias has never moved, or its previous version is gone")
    def post(self, name: str, alias: str) -> Any:
        """Roll an alias back

        Moves the alias to where it pointed before its last move (from the audit log); a
        second rollback moves it forward again.
        """
        return aliases.rollback_alias(session(), name, alias, actor=current_actor().name)


@blp.route("/models/<name>/aliases/<alias>/history")
class AliasHistory(MethodView):
    @requires("reader")
    @private("events")
    @blp.arguments(HistoryArgs, location="query", as_kwargs=True)
    @blp.response(200, AliasStateSchema(many=True))
    @blp.paginate()
    def get(self, name: str, alias: str, pagination_parameters: PaginationParameters, **args: Any) -> Any:
        """An alias's history

        Every state the alias had (a version, or weights), newest first, with when it began and
        ended, who set it and the event that did; read from the audit log, so it goes back to
        the alias's first move. With `at` (an ISO 8601 time): the one state in force then, as
        `{"alias", "at", "version"}` or `{"alias", "at", "weights"}`; 404 before the alias existed.
        """
        if "at" in args:
            pagination_parameters.item_count = 1
            state = history.alias_at(session(), name, alias, args["at"])
            return jsonify({**state, "at": state["at"].isoformat()})
        page = history.alias_history(session(), name, alias, offset=pagination_parameters.first_item,
                                     limit=pagination_parameters.page_size, before=args.get("cursor"))
        return page_of(pagination_parameters, page, "history", by_cursor="cursor" in args)


@blp.route("/models/<name>/aliases/<alias>/approvals")
class AliasApprovals(MethodView):
    @requires("reader")
    @blp.response(200, PendingMoveSchema(many=True))
    def get(self, name: str, alias: str) -> Any:
        """Moves of an alias waiting for a second approver

        Those not yet approved nor expired, oldest first (`[aliases] second_approver`).
        """
        return approvals.pending(session(), name, alias)


@blp.route("/models/<name>/aliases/<alias>/approvals/<int:approval_id>")
class AliasApproval(MethodView):
    @requires("promoter")
    @blp.response(200, AliasMoveSchema)
    @blp.alt_response(403, description="The token that asked for the move cannot approve it")
    @blp.alt_response(409, description="Approved already, expired, or the version failed its replay")
    def post(self, name: str, alias: str, approval_id: int) -> Any:
        """Approve a pending move

        A promoter's token other than the one that asked makes the move (a replay gate replays
        its versions again first); the event names both.
        """
        return aliases.approve(session(), name, alias, approval_id, actor=current_actor().name, gate=_gate(alias),
                               replayer=_replay)


def _gate(alias: str) -> approvals.Gate:
    """What a move of ``alias`` must pass, from ``[aliases]``."""
    config = runtime().settings.aliases
    gate = approvals.Gate(alias in config.replay, alias in config.second_approver, config.approval_ttl_seconds)
    return gate if gate.replay or gate.second_approver else approvals.NO_GATE


def _replay(name: str, version: int, rows: Any) -> list[Any]:
    return runtime().predictor.predictions(session, name, str(version), rows)


def _moved(result: Any) -> Any:
    """A move made, or (202) one held for its second approver, saying how to approve it."""
    if not isinstance(result, dict):
        return result
    link = f"/models/{result['model']}/aliases/{result['alias']}/approvals/{result['id']}"
    response = jsonify({**PendingMoveSchema().dump(result), "status": "pending", "approve": link,
                        "message": f"waiting for a second approver: POST {link} with another promoter's token"})
    response.status_code = 202
    return response


@blp.route("/models/<name>/aliases/<alias>/guard")
class AliasGuard(MethodView):
    @requires("reader")
    @blp.response(200, GuardStatusSchema)
    def get(self, name: str, alias: str) -> Any:
        """Where a guarded canary stands

        The rule, the state the alias returns to when it trips, and per candidate version over
        the last window (every worker and server): requests, errors, the samples the measure is
        over, the measure and its verdict (`ok`, `over`, or `inconclusive` below
        `min_samples`). 404 when the alias has no guard (it never had one, or it tripped).
        """
        runtime().predictor.flush_counts()
        return guards.status(session(), name, alias)


@blp.route("/models/<name>/aliases/<alias>/shadow")
class AliasShadow(MethodView):
    @requires("reader")
    @blp.response(200, ShadowReportSchema)
    def get(self, name: str, alias: str) -> Any:
        """How an alias's shadow compares

        Requests sampled, compared, the share of rows predicted alike, failures, requests
        dropped (the runner's queue was full), the largest difference of a regressor's
        predictions, and p50/p99 latency of the primary and the shadow, added up over every
        worker and server since the shadow was set.
        """
        runtime().predictor.flush_counts()
        return shadows.report(session(), name, alias)

    @requires("uploader")
    @moves_alias
    @blp.arguments(ShadowSetSchema)
    @blp.response(200, ShadowSchema)
    def put(self, body: dict[str, Any], name: str, alias: str) -> Any:
        """Shadow an alias with a version

        Body `{"version": 5, "fraction": 0.1}`: that share of the requests the alias serves is
        also run on version 5 after the answer is computed (the caller gets the alias's answer
        only, never an error of the shadow's) and compared. Sampled by a hash of the request's
        `X-Request-Key` when it has one, at random otherwise. Replaces the alias's shadow, and
        its report starts again.
        """
        return shadows.set_shadow(session(), name, alias, body["version"], body["fraction"],
                                  actor=current_actor().name)

    @requires("uploader")
    @moves_alias
    @blp.response(204)
    def delete(self, name: str, alias: str) -> None:
        """Stop shadowing an alias (its report goes with it)"""
        shadows.delete_shadow(session(), name, alias, actor=current_actor().name)
